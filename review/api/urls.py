from django.urls import path, re_path

from review.api import views

# POSTs match with or without the trailing slash: a POST cannot be redirected to add it.
urlpatterns = [
    path("items/", views.ItemListView.as_view(), name="api-review-items"),
    re_path(r"^items/claim-next/?$", views.ItemClaimNextView.as_view(), name="api-review-claim-next"),
    path("items/<str:item_id>/", views.ItemDetailView.as_view(), name="api-review-item"),
    re_path(r"^items/(?P<item_id>[^/]+)/claim/?$", views.ItemClaimView.as_view(), name="api-review-claim"),
    re_path(r"^items/(?P<item_id>[^/]+)/release/?$", views.ItemReleaseView.as_view(), name="api-review-release"),
    re_path(r"^items/(?P<item_id>[^/]+)/needed-human/?$", views.ItemNeededHumanView.as_view(),
            name="api-review-needed-human"),
]
