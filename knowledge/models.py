"""Knowledge: collections with an audience, documents, and searchable chunks."""

from __future__ import annotations

from django.conf import settings
from django.contrib.postgres.indexes import GinIndex
from django.contrib.postgres.search import SearchVector, SearchVectorField
from django.core.validators import MaxValueValidator, MinValueValidator
from django.db import models
from pgvector.django import VectorField

from config.models import BaseModel


class Audience(models.TextChoices):
    CUSTOMER = "customer", "Customer-visible"
    INTERNAL = "internal", "Internal only"


class Collection(BaseModel):
    """A set of documents with one audience; only customer-visible ones reach customers."""

    name = models.CharField(max_length=120, unique=True)
    audience = models.CharField(max_length=20, choices=Audience.choices, default=Audience.CUSTOMER)
    description = models.TextField(blank=True)
    # Chunking: short chunks suit FAQs and policies, longer ones manuals and papers.
    chunk_size = models.PositiveIntegerField(
        default=900, validators=[MinValueValidator(200), MaxValueValidator(8000)],
        help_text="Largest chunk in characters (200 to 8,000). Applies to documents ingested from now on.")
    chunk_overlap = models.PositiveSmallIntegerField(
        default=1, validators=[MaxValueValidator(5)],
        help_text="Sentences repeated at the start of the next chunk of a section (0 to 5).")

    class Meta:
        # Object permissions (django-guardian) per collection: view = read its documents in
        # the back office, change = upload and edit, publish = make documents live.
        permissions = [("publish_collection", "Can publish documents of the collection")]

    def __str__(self) -> str:
        return self.name


class DocumentStatus(models.TextChoices):
    PENDING = "pending"
    READY = "ready"
    FAILED = "failed"


class DocumentKind(models.TextChoices):
    FILE = "file", "File or article"
    # An answer an agent wrote to a customer question (knowledge/curated.py): its title is the
    # question, and retrieval puts it first when a customer asks that question again.
    CURATED = "curated", "Curated answer"


class Document(BaseModel):
    """One article or file. Its chunks are replaced atomically when its content changes."""

    collection = models.ForeignKey(Collection, on_delete=models.CASCADE, related_name="documents")
    slug = models.SlugField(max_length=200)
    title = models.CharField(max_length=300)
    url = models.CharField(max_length=500, blank=True)
    checksum = models.CharField(max_length=64)
    status = models.CharField(max_length=20, choices=DocumentStatus.choices, default=DocumentStatus.PENDING)
    version = models.PositiveIntegerField(default=1)
    body = models.TextField(blank=True)
    # Unpublished documents are kept and versioned but never served to anyone's search.
    published = models.BooleanField(default=True)
    # Free-form labels ({"product": "tents", "region": "eu"}) that searches can filter on.
    metadata = models.JSONField(default=dict, blank=True)
    # Set by the services that create documents, never in a form: a file turned "curated" by
    # hand would be put first and answered with word for word.
    kind = models.CharField(max_length=20, choices=DocumentKind.choices, default=DocumentKind.FILE, editable=False)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["collection", "slug"], name="document_collection_slug_uniq")]
        indexes = [
            GinIndex(fields=["metadata"], name="document_metadata_gin", opclasses=["jsonb_path_ops"]),
            # The curated answers of a collection (knowledge.curated.curated_answer_list).
            models.Index(fields=["kind", "collection"], name="document_kind_collection"),
        ]

    def __str__(self) -> str:
        return self.title


class Chunk(BaseModel):
    """A passage of a document with its section heading, full-text vector and embedding."""

    document = models.ForeignKey(Document, on_delete=models.CASCADE, related_name="chunks")
    position = models.PositiveIntegerField()
    # The document's title, copied so that the full-text vector (one row's columns only) holds
    # it, weighted like the body: the section heading (A) says more about a passage than the
    # title of a long document does. bench/retrieval_quality.py, lexical nDCG@10 for title at
    # A / B / none: SciFact 0.636 / 0.685 / 0.670, StackFAQ 0.861 / 0.822 / 0.742.
    title = models.CharField(max_length=300, blank=True)
    section = models.CharField(max_length=300, blank=True)
    text = models.TextField()
    search_vector = models.GeneratedField(
        expression=SearchVector("title", weight="B", config="english")
        + SearchVector("section", weight="A", config="english")
        + SearchVector("text", weight="B", config="english"),
        output_field=SearchVectorField(),
        db_persist=True,
    )
    # Embeddings live in ChunkEmbedding, one per embedding space (model).

    class Meta:
        ordering = ["document", "position"]
        indexes = [GinIndex(fields=["search_vector"], name="chunk_search_vector_gin")]
        constraints = [models.UniqueConstraint(fields=["document", "position"], name="chunk_document_position_uniq")]

    def __str__(self) -> str:
        return f"{self.document_id}#{self.position}"


class DocumentVersion(BaseModel):
    """One stored revision of a document's text (append-only history).

    The live chunks always belong to ``Document.version``; older rows keep the text that was
    served before, so a change can be audited or rolled back by re-ingesting it."""

    document = models.ForeignKey(Document, on_delete=models.CASCADE, related_name="versions")
    version = models.PositiveIntegerField()
    checksum = models.CharField(max_length=64)
    title = models.CharField(max_length=300)
    body = models.TextField()
    chunk_count = models.PositiveIntegerField(default=0)
    source_name = models.CharField(max_length=255, blank=True)
    source_kind = models.CharField(max_length=20, blank=True)
    created_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL,
                                   related_name="+")

    class Meta:
        ordering = ["document", "-version"]
        constraints = [
            models.UniqueConstraint(fields=["document", "version"], name="documentversion_document_version_uniq"),
        ]

    def __str__(self) -> str:
        return f"{self.title} v{self.version}"


class IngestionStatus(models.TextChoices):
    QUEUED = "queued", "Queued"
    RUNNING = "running", "Running"
    DONE = "done", "Done"
    FAILED = "failed", "Failed"


class IngestionSource(models.TextChoices):
    ADMIN = "admin", "Admin upload"
    API = "api", "REST API"
    COMMAND = "command", "Management command"


class IngestionJob(BaseModel):
    """A batch of files to turn into documents of one collection.

    ``done`` means every file was processed (some may have failed: see the files);
    ``failed`` means none could be ingested. Counters are updated after each file so the
    progress can be polled while the job runs."""

    collection = models.ForeignKey(Collection, on_delete=models.CASCADE, related_name="ingestion_jobs")
    status = models.CharField(max_length=20, choices=IngestionStatus.choices, default=IngestionStatus.QUEUED)
    source = models.CharField(max_length=20, choices=IngestionSource.choices, default=IngestionSource.ADMIN)
    created_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL,
                                   related_name="+")
    total_files = models.PositiveIntegerField(default=0)
    processed_files = models.PositiveIntegerField(default=0)
    failed_files = models.PositiveIntegerField(default=0)
    skipped_files = models.PositiveIntegerField(default=0)
    chunk_count = models.PositiveIntegerField(default=0)
    # Labels given to every document the job ingests (see Document.metadata).
    metadata = models.JSONField(default=dict, blank=True)
    # False when the uploader may edit the collection but not publish: new documents are
    # stored unpublished, and live documents are left as they are (the file fails).
    publish = models.BooleanField(default=True)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at"]
        indexes = [models.Index(fields=["status", "created_at"], name="ingestionjob_status_created")]

    def __str__(self) -> str:
        return f"Ingestion {self.pk} ({self.status}, {self.processed_files}/{self.total_files})"

    @property
    def finished(self) -> bool:
        return self.status in (IngestionStatus.DONE, IngestionStatus.FAILED)


class IngestionFileStatus(models.TextChoices):
    QUEUED = "queued", "Queued"
    RUNNING = "running", "Running"
    DONE = "done", "Ingested"
    SKIPPED = "skipped", "Unchanged"
    FAILED = "failed", "Failed"


class IngestionFile(BaseModel):
    """One file of a job: where its bytes are, and what became of it."""

    job = models.ForeignKey(IngestionJob, on_delete=models.CASCADE, related_name="files")
    position = models.PositiveIntegerField()
    name = models.CharField(max_length=255)
    slug = models.SlugField(max_length=200)
    # Uploads are kept in the default storage; the ingest command reads files in place.
    storage_name = models.CharField(max_length=500, blank=True)
    local_path = models.CharField(max_length=1000, blank=True)
    size = models.PositiveBigIntegerField(default=0)
    status = models.CharField(max_length=20, choices=IngestionFileStatus.choices, default=IngestionFileStatus.QUEUED)
    kind = models.CharField(max_length=20, blank=True)
    error = models.TextField(blank=True)
    document = models.ForeignKey(Document, null=True, blank=True, on_delete=models.SET_NULL, related_name="+")
    version = models.PositiveIntegerField(null=True, blank=True)
    chunk_count = models.PositiveIntegerField(default=0)

    class Meta:
        ordering = ["job", "position"]
        constraints = [models.UniqueConstraint(fields=["job", "position"], name="ingestionfile_job_position_uniq")]
        indexes = [models.Index(fields=["job", "status"], name="ingestionfile_job_status")]

    def __str__(self) -> str:
        return f"{self.name} ({self.status})"


class EmbeddingSpaceStatus(models.TextChoices):
    BUILDING = "building", "Building"
    ACTIVE = "active", "Active"
    RETIRED = "retired", "Retired"
    FAILED = "failed", "Failed"


class EmbeddingSpace(BaseModel):
    """The vectors of one embedding model over every chunk, with their own HNSW index.

    Exactly one space is active: searches use it. Re-embedding (a new model) builds a second
    space beside it — ingestion writes to both meanwhile — and switches over in one commit
    when every chunk has a vector and the index is built; the old space is then retired and
    can be dropped. Vectors of different models are never compared."""

    provider = models.CharField(max_length=20)
    model = models.CharField(max_length=200)
    dimensions = models.PositiveIntegerField()
    status = models.CharField(max_length=20, choices=EmbeddingSpaceStatus.choices,
                              default=EmbeddingSpaceStatus.BUILDING)
    # A partial HNSW index over this space's rows of ChunkEmbedding, created when it is filled.
    index_name = models.CharField(max_length=63, blank=True)
    total_chunks = models.PositiveIntegerField(default=0)
    embedded_chunks = models.PositiveIntegerField(default=0)
    error = models.TextField(blank=True)
    created_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL,
                                   related_name="+")
    started_at = models.DateTimeField(null=True, blank=True)
    activated_at = models.DateTimeField(null=True, blank=True)
    retired_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at"]
        constraints = [
            models.UniqueConstraint(fields=["status"], condition=models.Q(status="active"),
                                    name="embeddingspace_one_active"),
            models.UniqueConstraint(fields=["status"], condition=models.Q(status="building"),
                                    name="embeddingspace_one_building"),
        ]

    def __str__(self) -> str:
        return f"{self.model} ({self.provider}, {self.dimensions}d, {self.status})"

    @property
    def spec(self):
        from knowledge.embeddings import EmbeddingSpec

        return EmbeddingSpec(self.provider, self.model, self.dimensions)


class ChunkEmbedding(models.Model):
    """A chunk's vector in one embedding space. The column has no fixed dimension: each
    space's partial index casts it to its own (``embedding::vector(N)``)."""

    id = models.BigAutoField(primary_key=True)
    space = models.ForeignKey(EmbeddingSpace, on_delete=models.CASCADE, related_name="+")
    chunk = models.ForeignKey(Chunk, on_delete=models.CASCADE, related_name="embeddings")
    embedding = VectorField()

    class Meta:
        constraints = [models.UniqueConstraint(fields=["space", "chunk"], name="chunkembedding_space_chunk_uniq")]
        indexes = [models.Index(fields=["chunk"], name="chunkembedding_chunk")]

    def __str__(self) -> str:
        return f"{self.chunk_id} in {self.space_id}"
