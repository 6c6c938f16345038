"""churnapp's API routes, mounted under /api/."""

from django.urls import path

from churnapp.api import activities, leads, webhooks

app_name = "churnapp"
urlpatterns: list = [
    path("leads/", leads.LeadListView.as_view(), name="lead-list"),
    path("leads/upsert/", leads.LeadUpsertView.as_view(), name="lead-upsert"),
    path("leads/bulk/", leads.LeadBulkUpsertView.as_view(), name="lead-bulk-upsert"),
    path(
        "leads/by-external-id/<str:external_id>/",
        leads.LeadByExternalIdView.as_view(),
        name="lead-by-external-id",
    ),
    path("leads/<int:lead_id>/", leads.LeadDetailView.as_view(), name="lead-detail"),
    path("activities/", activities.ActivityListView.as_view(), name="activity-list"),
    path(
        "activities/bulk/",
        activities.ActivityBulkIngestView.as_view(),
        name="activity-bulk-ingest",
    ),
    path(
        "webhooks/ghl/<slug:tenant_slug>/",
        webhooks.GhlWebhookView.as_view(),
        name="webhook-ghl",
    ),
]

# --- Risk scoring --------------------------------------------------------------------------
from churnapp.api import risk  # noqa: E402

urlpatterns += [
    path("leads/<int:lead_id>/risk", risk.LeadRiskApi.as_view(), name="lead-risk"),
    path("leads/<int:lead_id>/score", risk.LeadScoreApi.as_view(), name="lead-score"),
    path("risk/leads", risk.RiskLeadListApi.as_view(), name="risk-leads"),
]
