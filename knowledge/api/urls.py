from django.urls import path, re_path

from knowledge.api import views

urlpatterns = [
    path("collections/", views.CollectionListView.as_view(), name="api-knowledge-collections"),
    path("collections/<str:collection_id>/documents/", views.CollectionDocumentsView.as_view(),
         name="api-knowledge-upload"),
    path("collections/<str:collection_id>/jobs/", views.CollectionJobsView.as_view(), name="api-knowledge-jobs"),
    path("jobs/<str:job_id>/", views.IngestionJobDetailView.as_view(), name="api-knowledge-job"),
    # With or without the trailing slash: a POST cannot be redirected to add it.
    re_path(r"^documents/(?P<document_id>[^/]+)/publish/?$", views.DocumentPublishView.as_view(published=True),
            name="api-knowledge-document-publish"),
    re_path(r"^documents/(?P<document_id>[^/]+)/unpublish/?$", views.DocumentPublishView.as_view(published=False),
            name="api-knowledge-document-unpublish"),
]
