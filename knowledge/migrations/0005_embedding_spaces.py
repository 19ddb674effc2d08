import config.models
import django.db.models.deletion
import django.utils.timezone
import pgvector.django.vector
from django.conf import settings
from django.db import migrations, models


def move_embeddings(apps, schema_editor):
    from knowledge.embeddings import configured_spec

    EmbeddingSpace = apps.get_model("knowledge", "EmbeddingSpace")
    Chunk = apps.get_model("knowledge", "Chunk")
    spec = configured_spec()
    now = django.utils.timezone.now()
    space = EmbeddingSpace.objects.create(provider=spec.provider, model=spec.model, dimensions=spec.dimensions,
                                          status="active", started_at=now, activated_at=now)
    index = f"knowledge_ce_hnsw_{space.id.hex[-16:]}"
    with schema_editor.connection.cursor() as cursor:
        cursor.execute(
            "INSERT INTO knowledge_chunkembedding (space_id, chunk_id, embedding) "
            "SELECT %s, id, embedding FROM knowledge_chunk",
            [space.id],
        )
        # Only fixed identifiers and integers are formatted in.
        cursor.execute(
            f"CREATE INDEX {index} ON knowledge_chunkembedding USING hnsw "
            f"((embedding::vector({int(spec.dimensions)})) vector_cosine_ops) WITH (m = 16, ef_construction = 200) "
            f"WHERE space_id = '{space.id}'"
        )
    count = Chunk.objects.count()
    EmbeddingSpace.objects.filter(pk=space.pk).update(index_name=index, total_chunks=count, embedded_chunks=count)


class Migration(migrations.Migration):

    dependencies = [
        ('knowledge', '0004_collection_settings_metadata'),
        migrations.swappable_dependency(settings.AUTH_USER_MODEL),
    ]

    operations = [
        migrations.CreateModel(
            name='ChunkEmbedding',
            fields=[
                ('id', models.BigAutoField(primary_key=True, serialize=False)),
                ('embedding', pgvector.django.vector.VectorField()),
            ],
        ),
        migrations.CreateModel(
            name='EmbeddingSpace',
            fields=[
                ('id', models.UUIDField(default=config.models.uuid7, editable=False, primary_key=True, serialize=False)),
                ('created_at', models.DateTimeField(auto_now_add=True, db_index=True)),
                ('updated_at', models.DateTimeField(auto_now=True)),
                ('provider', models.CharField(max_length=20)),
                ('model', models.CharField(max_length=200)),
                ('dimensions', models.PositiveIntegerField()),
                ('status', models.CharField(choices=[('building', 'Building'), ('active', 'Active'), ('retired', 'Retired'), ('failed', 'Failed')], default='building', max_length=20)),
                ('index_name', models.CharField(blank=True, max_length=63)),
                ('total_chunks', models.PositiveIntegerField(default=0)),
                ('embedded_chunks', models.PositiveIntegerField(default=0)),
                ('error', models.TextField(blank=True)),
                ('started_at', models.DateTimeField(blank=True, null=True)),
                ('activated_at', models.DateTimeField(blank=True, null=True)),
                ('retired_at', models.DateTimeField(blank=True, null=True)),
            ],
            options={
                'ordering': ['-created_at'],
            },
        ),
        migrations.AddField(
            model_name='chunkembedding',
            name='chunk',
            field=models.ForeignKey(on_delete=django.db.models.deletion.CASCADE, related_name='embeddings', to='knowledge.chunk'),
        ),
        migrations.AddField(
            model_name='embeddingspace',
            name='created_by',
            field=models.ForeignKey(blank=True, null=True, on_delete=django.db.models.deletion.SET_NULL, related_name='+', to=settings.AUTH_USER_MODEL),
        ),
        migrations.AddField(
            model_name='chunkembedding',
            name='space',
            field=models.ForeignKey(on_delete=django.db.models.deletion.CASCADE, related_name='+', to='knowledge.embeddingspace'),
        ),
        migrations.AddConstraint(
            model_name='embeddingspace',
            constraint=models.UniqueConstraint(condition=models.Q(('status', 'active')), fields=('status',), name='embeddingspace_one_active'),
        ),
        migrations.AddConstraint(
            model_name='embeddingspace',
            constraint=models.UniqueConstraint(condition=models.Q(('status', 'building')), fields=('status',), name='embeddingspace_one_building'),
        ),
        migrations.AddIndex(
            model_name='chunkembedding',
            index=models.Index(fields=['chunk'], name='chunkembedding_chunk'),
        ),
        migrations.AddConstraint(
            model_name='chunkembedding',
            constraint=models.UniqueConstraint(fields=('space', 'chunk'), name='chunkembedding_space_chunk_uniq'),
        ),
        # The vectors stored so far become the active space (the configured model made them),
        # with its partial HNSW index; then the old column and its index go.
        migrations.RunPython(move_embeddings, migrations.RunPython.noop),
        migrations.RemoveIndex(
            model_name='chunk',
            name='chunk_embedding_hnsw',
        ),
        migrations.RemoveField(
            model_name='chunk',
            name='embedding',
        ),
    ]
