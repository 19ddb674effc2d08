from django.apps import AppConfig
from django.db.models.signals import post_migrate


def _initial_space(sender, using="default", **kwargs) -> None:
    from django.db import connections

    from knowledge.embedding_spaces import initial_space_ensure
    from knowledge.models import EmbeddingSpace

    # Not after migrating backwards past the table, nor on another database.
    if using != "default" or EmbeddingSpace._meta.db_table not in connections[using].introspection.table_names():
        return
    initial_space_ensure()


class KnowledgeConfig(AppConfig):
    """Collections, documents, chunks with embeddings, and retrieval."""

    name = "knowledge"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from knowledge import retention

        retention.register()
        # A flush (transactional tests) empties the table; the index must always have a space.
        post_migrate.connect(_initial_space, sender=self, dispatch_uid="knowledge.initial_space")
