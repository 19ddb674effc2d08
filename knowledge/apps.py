from django.apps import AppConfig


class KnowledgeConfig(AppConfig):
    """Collections, documents, chunks with embeddings, and retrieval."""

    name = "knowledge"
    default_auto_field = "django.db.models.BigAutoField"
