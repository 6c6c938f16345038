"""tracking's API routes, mounted under /api/."""

from django.urls import path

from tracking.api import views

app_name = "tracking"
urlpatterns = [
    path("tracking/events/", views.TrackingEventsApi.as_view(), name="events"),
    path(
        "tracking/export/<slug:dataset>.csv",
        views.ExportApi.as_view(),
        name="export",
    ),
    path(
        "interventions/<int:pk>/timeline/",
        views.InterventionTimelineApi.as_view(),
        name="intervention-timeline",
    ),
    path("analytics/success/", views.AnalyticsSuccessApi.as_view(), name="analytics-success"),
    path("analytics/impact/", views.AnalyticsImpactApi.as_view(), name="analytics-impact"),
]
