"""Knowledge: collections with an audience, documents, and searchable chunks."""

from __future__ import annotations

from django.contrib.postgres.indexes import GinIndex
from django.contrib.postgres.search import SearchVector, SearchVectorField
from django.db import models
from pgvector.django import HnswIndex, VectorField

from config.models import BaseModel


class Audience(models.TextChoices):
    CUSTOMER = "customer", "Customer-visible"
    INTERNAL = "internal", "Internal only"


class Collection(BaseModel):
    """A set of documents with one audience; only customer-visible ones reach customers."""

    name = models.CharField(max_length=120, unique=True)
    audience = models.CharField(max_length=20, choices=Audience.choices, default=Audience.CUSTOMER)
    description = models.TextField(blank=True)

    def __str__(self) -> str:
        return self.name


class DocumentStatus(models.TextChoices):
    PENDING = "pending"
    READY = "ready"
    FAILED = "failed"


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

    class Meta:
        constraints = [models.UniqueConstraint(fields=["collection", "slug"], name="document_collection_slug_uniq")]

    def __str__(self) -> str:
        return self.title


class Chunk(BaseModel):
    """A passage of a document with its section heading, full-text vector and embedding."""

    document = models.ForeignKey(Document, on_delete=models.CASCADE, related_name="chunks")
    position = models.PositiveIntegerField()
    section = models.CharField(max_length=300, blank=True)
    text = models.TextField()
    search_vector = models.GeneratedField(
        expression=SearchVector("section", weight="A", config="english")
        + SearchVector("text", weight="B", config="english"),
        output_field=SearchVectorField(),
        db_persist=True,
    )
    embedding = VectorField(dimensions=384)

    class Meta:
        ordering = ["document", "position"]
        indexes = [
            GinIndex(fields=["search_vector"], name="chunk_search_vector_gin"),
            HnswIndex(
                name="chunk_embedding_hnsw",
                fields=["embedding"],
                m=16,
                ef_construction=64,
                opclasses=["vector_cosine_ops"],
            ),
        ]
        constraints = [models.UniqueConstraint(fields=["document", "position"], name="chunk_document_position_uniq")]

    def __str__(self) -> str:
        return f"{self.document_id}#{self.position}"
