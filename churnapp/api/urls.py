"""churnapp's API routes, mounted under /api/."""

from django.urls import path  # noqa: F401

app_name = "churnapp"
urlpatterns: list = []

# --- Risk scoring --------------------------------------------------------------------------
from churnapp.api import risk  # noqa: E402

urlpatterns += [
    path("leads/<int:lead_id>/risk", risk.LeadRiskApi.as_view(), name="lead-risk"),
    path("leads/<int:lead_id>/score", risk.LeadScoreApi.as_view(), name="lead-score"),
    path("risk/leads", risk.RiskLeadListApi.as_view(), name="risk-leads"),
]
