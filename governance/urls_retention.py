"""URL patterns of the governance retention pages (mounted at /governance/retention/)."""

from django.urls import path

from governance import views_retention as views

urlpatterns = [
    path("", views.retention_index, name="retention_index"),
    path("policies/", views.retention_policy, name="retention_policy"),
    path("policies/preview/", views.retention_preview, name="retention_preview"),
    path("holds/", views.retention_hold_place, name="retention_hold_place"),
    path("holds/<uuid:hold_id>/release/", views.retention_hold_release, name="retention_hold_release"),
    path("erasure/", views.retention_erase, name="retention_erase"),
]
