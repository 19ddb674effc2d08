"""Top-level URLs."""

from django.contrib import admin
from django.contrib.auth import views as auth_views
from django.urls import include, path

from config import views
from integrations.webhook_views import inbound_webhook

urlpatterns = [
    path("", views.home, name="home"),
    path("healthz", views.healthz, name="healthz"),
    path("admin/", admin.site.urls),
    path("accounts/login/", auth_views.LoginView.as_view(template_name="registration/login.html"), name="login"),
    path("accounts/logout/", auth_views.LogoutView.as_view(), name="logout"),
    path("help/", include("knowledge.urls")),
    path("governance/", include(("governance.urls", "governance"))),
    path("", include("convo.urls")),
    path("api/v1/knowledge/", include("knowledge.api.urls")),
    path("api/review/", include("review.api.urls")),
    path("api/governance/", include("governance.api.urls")),
    path("api/v1/integrations/webhooks/<str:connector_name>/", inbound_webhook, name="integrations_inbound_webhook"),
    path("api/v1/", include("convo.api.urls")),
]
