"""URL patterns of the governance versions pages (mounted at ``/governance/``).

``models/…`` and ``prompts/…`` share their views: the ``kind`` converter turns the segment into
``"model"`` or ``"prompt"`` (``reverse("governance:versions_detail", args=["model", pk])``)."""

from django.urls import path, register_converter

from governance import views_versions as views


class VersionKindConverter:
    regex = "models|prompts"

    def to_python(self, value: str) -> str:
        return value[:-1]

    def to_url(self, value: str) -> str:
        return f"{value}s"


register_converter(VersionKindConverter, "version_kind")

urlpatterns = [
    path("", views.versions_overview, name="versions_overview"),
    path("rollback/", views.deployment_rollback, name="deployment_rollback"),
    path("deployments/<uuid:pk>/end/", views.deployment_end, name="deployment_end"),
    path("<version_kind:kind>/new/", views.versions_new, name="versions_new"),
    path("<version_kind:kind>/<uuid:pk>/", views.versions_detail, name="versions_detail"),
    path("<version_kind:kind>/<uuid:pk>/edit/", views.versions_edit, name="versions_edit"),
    path("<version_kind:kind>/<uuid:pk>/submit/", views.versions_submit, name="versions_submit"),
    path("<version_kind:kind>/<uuid:pk>/approve/", views.versions_approve, name="versions_approve"),
    path("<version_kind:kind>/<uuid:pk>/reject/", views.versions_reject, name="versions_reject"),
    path("<version_kind:kind>/<uuid:pk>/derive/", views.versions_derive, name="versions_derive"),
    path("<version_kind:kind>/<uuid:pk>/retire/", views.versions_retire, name="versions_retire"),
    path("<version_kind:kind>/<uuid:pk>/activate/", views.versions_activate, name="versions_activate"),
    path("<version_kind:kind>/<uuid:pk>/split/", views.versions_split, name="versions_split"),
    path("<version_kind:kind>/<uuid:pk>/shadow/", views.versions_shadow, name="versions_shadow"),
    path("<version_kind:kind>/<uuid:pk>/documentation/", views.versions_documentation,
         name="versions_documentation"),
]
