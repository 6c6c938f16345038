"""interventions' API routes, mounted under /api/."""

from django.urls import path

from interventions.api import views

app_name = "interventions"
urlpatterns = [
    path("interventions/", views.InterventionListApi.as_view(), name="intervention-list"),
    path(
        "interventions/<int:pk>/", views.InterventionDetailApi.as_view(), name="intervention-detail"
    ),
    path(
        "interventions/<int:pk>/outcome/",
        views.InterventionOutcomeApi.as_view(),
        name="intervention-outcome",
    ),
    path(
        "leads/<int:lead_id>/interventions/",
        views.LeadInterventionsApi.as_view(),
        name="lead-interventions",
    ),
    path("escalations/", views.EscalationListApi.as_view(), name="escalation-list"),
    path(
        "escalations/<int:pk>/acknowledge/",
        views.EscalationAcknowledgeApi.as_view(),
        name="escalation-acknowledge",
    ),
    path(
        "escalations/<int:pk>/resolve/",
        views.EscalationResolveApi.as_view(),
        name="escalation-resolve",
    ),
]
