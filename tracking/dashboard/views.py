"""Dashboard pages: log in, overview, leads at risk, lead detail, escalations, agent view."""

from __future__ import annotations

import functools
from pathlib import Path

import plotly
from django.contrib.auth import views as auth_views
from django.contrib.auth.decorators import login_required
from django.http import FileResponse, Http404, HttpRequest, HttpResponse
from django.shortcuts import render
from django.urls import reverse_lazy
from django.utils import timezone
from django.views.decorators.cache import cache_control
from django.views.decorators.http import require_GET

from churnapp.models import Agent, AgentRole
from tracking.consumers import heartbeat_seconds
from tracking.dashboard import selectors
from tracking.selectors import PERIODS, period_resolve

LOGIN_URL = reverse_lazy("dashboard:login")
PLOTLY_JS = Path(plotly.__file__).parent / "package_data" / "plotly.min.js"


class DashboardLoginView(auth_views.LoginView):
    template_name = "tracking/dashboard/login.html"
    redirect_authenticated_user = True


def dashboard_member(view):
    """Logged in and an active agent of an active tenant: sets request.agent and
    request.tenant, from which every page reads its data. Anyone else gets a 403 page."""

    @login_required(login_url=LOGIN_URL)
    @functools.wraps(view)
    def wrapped(request: HttpRequest, *args, **kwargs) -> HttpResponse:
        agent = (
            Agent.objects.select_related("tenant")
            .filter(user=request.user, is_active=True, tenant__is_active=True)
            .first()
        )
        if agent is None:
            return render(request, "tracking/dashboard/no_tenant.html", status=403)
        request.agent = agent
        request.tenant = agent.tenant
        return view(request, *args, **kwargs)

    return wrapped


def _base(request: HttpRequest, active: str) -> dict:
    return {
        "agent": request.agent,
        "tenant": request.tenant,
        "is_manager": request.agent.role == AgentRole.MANAGER or request.user.is_staff,
        "active": active,
        "now": timezone.now(),
        # The page's resync cursor: it asks /api/tracking/events for anything after it.
        "live_cursor": selectors.latest_event_id(tenant=request.tenant),
        "heartbeat_seconds": heartbeat_seconds(),
    }


@require_GET
@dashboard_member
def overview(request: HttpRequest) -> HttpResponse:
    period_key = request.GET.get("period", "30d")
    if period_key not in PERIODS:
        period_key = "30d"
    period = period_resolve(period=period_key)
    data = selectors.overview(tenant=request.tenant, period=period)
    stages = {row["stage"]: row for row in data["success"]["success"]["by_stage"]}
    charts = {
        "success_by_stage": data["success"]["success"]["by_stage"],
        "targets": data["success"]["targets"]["stage_success"],
        "funnel": data["success"]["funnel"],
        "churn_series": data["churn_series"],
        "tiers": data["tiers"],
        "score_histogram": data["score_histogram"],
        "escalation_times": data["success"]["escalations"],
    }
    return render(
        request,
        "tracking/dashboard/overview.html",
        {
            **_base(request, "overview"),
            "period_key": period_key,
            "periods": list(PERIODS),
            "data": data,
            "stage_rows": [
                {
                    "stage": stage,
                    "row": stages.get(stage),
                    "target": data["success"]["targets"]["stage_success"].get(str(stage)),
                }
                for stage in (1, 2, 3)
            ],
            "at_risk": sum(data["tiers"][t] for t in selectors.AT_RISK_TIERS),
            "charts": charts,
            "feed": selectors.recent_events(tenant=request.tenant),
        },
    )


@require_GET
@dashboard_member
def leads(request: HttpRequest) -> HttpResponse:
    agent_raw = request.GET.get("agent", "")
    filters = selectors.LeadFilters(
        tier=request.GET.get("tier", ""),
        agent_id=int(agent_raw) if agent_raw.isdigit() else None,
        source=request.GET.get("source", ""),
        pipeline_stage=request.GET.get("pipeline_stage", ""),
    )
    page, rows = selectors.leads_page(
        tenant=request.tenant, filters=filters, page=request.GET.get("page") or 1
    )
    query = request.GET.copy()
    query.pop("page", None)
    return render(
        request,
        "tracking/dashboard/leads.html",
        {
            **_base(request, "leads"),
            "page": page,
            "rows": rows,
            "filters": filters,
            "choices": selectors.filter_choices(tenant=request.tenant),
            "query": query.urlencode(),
        },
    )


@require_GET
@dashboard_member
def lead_detail(request: HttpRequest, lead_id: int) -> HttpResponse:
    detail = selectors.lead_detail(tenant=request.tenant, lead_id=lead_id)
    if detail is None:
        raise Http404("No such lead.")
    return render(
        request,
        "tracking/dashboard/lead_detail.html",
        {**_base(request, "leads"), **detail},
    )


@require_GET
@dashboard_member
def escalations(request: HttpRequest) -> HttpResponse:
    return render(
        request,
        "tracking/dashboard/escalations.html",
        {
            **_base(request, "escalations"),
            "escalations": selectors.escalation_rows(tenant=request.tenant),
        },
    )


@require_GET
@dashboard_member
def escalation_row(request: HttpRequest, escalation_id: int) -> HttpResponse:
    """One queue row, for the page to insert when a live ``escalated`` event arrives."""
    escalation = selectors.escalation_rows(tenant=request.tenant).filter(pk=escalation_id).first()
    if escalation is None:
        raise Http404("No such escalation in your queue.")
    return render(request, "tracking/dashboard/_escalation_row.html", {"e": escalation})


@require_GET
@dashboard_member
def agent_view(request: HttpRequest) -> HttpResponse:
    return render(
        request,
        "tracking/dashboard/agent.html",
        {**_base(request, "agent"), "rows": selectors.agent_leads(agent=request.agent)},
    )


@require_GET
@cache_control(max_age=86400, public=True)
def plotly_js(request: HttpRequest) -> FileResponse:
    """plotly.js from the installed Python package: charts without a CDN or network."""
    return FileResponse(PLOTLY_JS.open("rb"), content_type="text/javascript")
