import django.contrib.postgres.indexes
import django.contrib.postgres.search
import django.core.validators
from django.db import migrations, models


class Migration(migrations.Migration):

    dependencies = [
        ('knowledge', '0003_ingestion'),
    ]

    operations = [
        migrations.AlterModelOptions(
            name='collection',
            options={'permissions': [('publish_collection', 'Can publish documents of the collection')]},
        ),
        migrations.AddField(
            model_name='chunk',
            name='title',
            field=models.CharField(blank=True, max_length=300),
        ),
        migrations.AddField(
            model_name='collection',
            name='chunk_overlap',
            field=models.PositiveSmallIntegerField(default=1, help_text='Sentences repeated at the start of the next chunk of a section (0 to 5).', validators=[django.core.validators.MaxValueValidator(5)]),
        ),
        migrations.AddField(
            model_name='collection',
            name='chunk_size',
            field=models.PositiveIntegerField(default=900, help_text='Largest chunk in characters (200 to 8,000). Applies to documents ingested from now on.', validators=[django.core.validators.MinValueValidator(200), django.core.validators.MaxValueValidator(8000)]),
        ),
        migrations.AddField(
            model_name='document',
            name='metadata',
            field=models.JSONField(blank=True, default=dict),
        ),
        migrations.AddField(
            model_name='document',
            name='published',
            field=models.BooleanField(default=True),
        ),
        migrations.AddField(
            model_name='ingestionjob',
            name='metadata',
            field=models.JSONField(blank=True, default=dict),
        ),
        migrations.AddField(
            model_name='ingestionjob',
            name='publish',
            field=models.BooleanField(default=True),
        ),
        # A generated column cannot be altered: the full-text vector is dropped and rebuilt
        # with the document title (copied into each chunk first) at the body's weight (B): at
        # A, paper titles outweighed the abstracts (SciFact lexical nDCG@10 0.636 against 0.685).
        migrations.RunSQL(
            "UPDATE knowledge_chunk c SET title = left(d.title, 300) FROM knowledge_document d WHERE d.id = c.document_id",
            reverse_sql=migrations.RunSQL.noop,
        ),
        migrations.RemoveIndex(model_name='chunk', name='chunk_search_vector_gin'),
        migrations.RemoveField(model_name='chunk', name='search_vector'),
        migrations.AddField(
            model_name='chunk',
            name='search_vector',
            field=models.GeneratedField(db_persist=True, expression=django.contrib.postgres.search.CombinedSearchVector(django.contrib.postgres.search.CombinedSearchVector(django.contrib.postgres.search.SearchVector('title', config='english', weight='B'), '||', django.contrib.postgres.search.SearchVector('section', config='english', weight='A'), django.contrib.postgres.search.SearchConfig('english')), '||', django.contrib.postgres.search.SearchVector('text', config='english', weight='B'), django.contrib.postgres.search.SearchConfig('english')), output_field=django.contrib.postgres.search.SearchVectorField()),
        ),
        migrations.AddIndex(
            model_name='chunk',
            index=django.contrib.postgres.indexes.GinIndex(fields=['search_vector'], name='chunk_search_vector_gin'),
        ),
        migrations.AddIndex(
            model_name='document',
            index=django.contrib.postgres.indexes.GinIndex(fields=['metadata'], name='document_metadata_gin', opclasses=['jsonb_path_ops']),
        ),
    ]
