"""Governance pages (model owners, compliance officers): versions and deployments, evaluation runs, retention."""

from django.urls import include, path

urlpatterns = [
    path("retention/", include("governance.urls_retention")),
    path("evaluations/", include("governance.urls_evaluation")),
    path("", include("governance.urls_versions")),
]
