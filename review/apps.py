from django.apps import AppConfig


class ReviewConfig(AppConfig):
    """A generic work queue for humans; higher apps register what their kinds mean."""

    name = "review"
    default_auto_field = "django.db.models.BigAutoField"
