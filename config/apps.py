from django.apps import AppConfig


class ConfigConfig(AppConfig):
    """Project plumbing registered as an app so its templates and commands are found."""

    name = "config"
    verbose_name = "Tandem"
