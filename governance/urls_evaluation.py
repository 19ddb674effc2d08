"""URL patterns of the governance evaluation pages (mounted at /governance/evaluations/)."""

from django.urls import path

from governance import views_evaluation as views

urlpatterns = [
    path("", views.evaluation_list, name="evaluation_list"),
    path("new/", views.evaluation_new, name="evaluation_new"),
    path("<uuid:run_id>/", views.evaluation_report, name="evaluation_report"),
    path("<uuid:run_id>/progress.json", views.evaluation_progress, name="evaluation_progress"),
    path("<uuid:run_id>/results/<uuid:result_id>/", views.evaluation_result, name="evaluation_result"),
    path("<uuid:run_id>/results/<uuid:result_id>/verdict/", views.evaluation_result_verdict,
         name="evaluation_result_verdict"),
]
