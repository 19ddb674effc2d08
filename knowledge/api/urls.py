from django.urls import path

from knowledge.api import views

urlpatterns = [
    path("collections/<str:collection_id>/documents/", views.CollectionDocumentUploadView.as_view(),
         name="api-knowledge-upload"),
    path("jobs/<str:job_id>/", views.IngestionJobDetailView.as_view(), name="api-knowledge-job"),
]
