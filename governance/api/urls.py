"""Mounted at ``/api/governance/`` (config/urls.py). POSTs match with or without the trailing
slash: a POST cannot be redirected to add it."""

from django.urls import path, re_path

from governance.api import views

UUID = r"(?P<pk>[0-9a-fA-F-]{32,36})"
ACTS = r"(?P<action>submit|approve|reject|derive|retire)"

urlpatterns = [
    path("model-versions/", views.VersionListView.as_view(kind="model"), name="api-governance-model-versions"),
    path("model-versions/<uuid:pk>/", views.VersionDetailView.as_view(kind="model"),
         name="api-governance-model-version"),
    re_path(rf"^model-versions/{UUID}/{ACTS}/?$", views.VersionActView.as_view(kind="model"),
            name="api-governance-model-version-act"),
    path("prompt-versions/", views.VersionListView.as_view(kind="prompt"), name="api-governance-prompt-versions"),
    path("prompt-versions/<uuid:pk>/", views.VersionDetailView.as_view(kind="prompt"),
         name="api-governance-prompt-version"),
    re_path(rf"^prompt-versions/{UUID}/{ACTS}/?$", views.VersionActView.as_view(kind="prompt"),
            name="api-governance-prompt-version-act"),
    path("deployments/", views.DeploymentListView.as_view(), name="api-governance-deployments"),
    re_path(r"^deployments/activate/?$", views.DeploymentActivateView.as_view(),
            name="api-governance-deployments-activate"),
    re_path(r"^deployments/rollback/?$", views.DeploymentRollbackView.as_view(),
            name="api-governance-deployments-rollback"),
    re_path(r"^deployments/split/?$", views.DeploymentSplitView.as_view(), name="api-governance-deployments-split"),
    re_path(r"^deployments/shadow/?$", views.DeploymentShadowView.as_view(),
            name="api-governance-deployments-shadow"),
    path("deployments/<uuid:pk>/", views.DeploymentDetailView.as_view(), name="api-governance-deployment"),
    re_path(rf"^deployments/{UUID}/end/?$", views.DeploymentEndView.as_view(), name="api-governance-deployment-end"),
]
