"""Template rendering with strict variables, SMS segment counting and link extraction."""

from __future__ import annotations

import functools
import html as html_lib
import re
from dataclasses import dataclass
from decimal import Decimal

from django.core.exceptions import ValidationError
from django.template import Context, Engine, TemplateSyntaxError
from django.template import Template as DjangoTemplate

from churnapp.models import Agent, Lead, Tenant


class UnknownVariableError(Exception):
    pass


class _StrictMarker(str):
    """Django formats `string_if_invalid % var_name` when it holds "%s": we raise instead."""

    def __contains__(self, item) -> bool:
        return item == "%s"

    def __mod__(self, var_name):
        raise UnknownVariableError(f"unknown variable {var_name!r}")


_MARKER = _StrictMarker("%s")
_BUILTINS = ["django.template.defaulttags", "django.template.defaultfilters"]
_TEXT_ENGINE = Engine(autoescape=False, string_if_invalid=_MARKER, builtins=_BUILTINS)
_HTML_ENGINE = Engine(autoescape=True, string_if_invalid=_MARKER, builtins=_BUILTINS)


# Compiled templates by source, per process: a scoring chunk renders the same few
# templates for every lead it plans for, and compiling was half of each render. A
# compiled Template is immutable and safe to render again (Django's cached loader does
# the same); an edited template is a new source, so nothing stale is ever rendered.
@functools.lru_cache(maxsize=512)
def _compiled_text(source: str) -> DjangoTemplate:
    return _TEXT_ENGINE.from_string(source)


@functools.lru_cache(maxsize=512)
def _compiled_html(source: str) -> DjangoTemplate:
    return _HTML_ENGINE.from_string(source)


def render_text(source: str, context: dict) -> str:
    # Context() escapes HTML unless told otherwise, whatever the engine says: an SMS to
    # O'Brien must not read "O&#x27;Brien".
    return _compiled_text(source).render(Context(context, autoescape=False)).strip()


def render_html(source: str, context: dict) -> str:
    return _compiled_html(source).render(Context(context, autoescape=True))


def sample_context(*, tenant: Tenant | None = None, extra: dict | None = None) -> dict:
    """The context every template is checked against: a lead, an agent, a tenant, reasons."""
    tenant = tenant or Tenant(name="Sample Realty", slug="sample", timezone="America/New_York")
    agent = Agent(tenant=tenant, name="Sam Agent", email="sam@example.com", phone="+15125550100")
    lead = Lead(
        tenant=tenant,
        external_id="sample-contact",
        first_name="Alex",
        last_name="Buyer",
        email="alex@example.com",
        phone="+15125550199",
        timezone="America/Chicago",
        budget=Decimal("450000"),
        assigned_agent=agent,
    )
    context = {
        "lead": lead,
        "agent": agent,
        "tenant": tenant,
        "risk_reasons": ["No reply in 14 days", "Stopped viewing listings"],
        "risk_tier": "active_risk",
        "risk_score": 0.72,
        "unsubscribe_url": "https://example.com/t/u/sample",
    }
    context.update(extra or {})
    return context


def template_check(*, template) -> None:
    """Render every part of a template against the sample context; ValidationError if any fails."""
    context = sample_context(tenant=template.tenant if template.tenant_id else None)
    context.update(template.sample_context or {})
    errors: dict[str, str] = {}
    parts = {
        "subject": (template.subject, render_text),
        "body_text": (template.body_text, render_text),
    }
    if template.body_html:
        parts["body_html"] = (template.body_html, render_html)
    for field, (source, render) in parts.items():
        try:
            render(source, context)
        except (TemplateSyntaxError, UnknownVariableError) as exc:
            errors[field] = str(exc)
        except Exception as exc:  # a filter blowing up on sample data is the author's bug too
            errors[field] = f"{type(exc).__name__}: {exc}"
    if template.channel == "email" and not template.subject:
        errors["subject"] = "an email template needs a subject"
    if errors:
        raise ValidationError(errors)


# GSM 03.38 basic set and the extension table (each extension char costs two septets).
_GSM7_BASIC = set(
    "@£$¥èéùìòÇ\nØø\rÅåΔ_ΦΓΛΩΠΨΣΘΞÆæßÉ !\"#¤%&'()*+,-./0123456789:;<=>?"
    "¡ABCDEFGHIJKLMNOPQRSTUVWXYZÄÖÑÜ§¿abcdefghijklmnopqrstuvwxyzäöñüà"
)
_GSM7_EXT = set("^{}\\[~]|€\f")


@dataclass(frozen=True)
class SmsSegments:
    encoding: str  # "GSM-7" or "UCS-2"
    units: int  # septets (GSM-7) or UTF-16 code units (UCS-2)
    segments: int

    def __str__(self) -> str:
        return f"{self.segments} segment(s), {self.encoding}, {self.units} units"


def sms_segments(text: str) -> SmsSegments:
    if all(ch in _GSM7_BASIC or ch in _GSM7_EXT for ch in text):
        units = sum(2 if ch in _GSM7_EXT else 1 for ch in text)
        single, multi, encoding = 160, 153, "GSM-7"
    else:
        units = len(text.encode("utf-16-le")) // 2
        single, multi, encoding = 70, 67, "UCS-2"
    if units == 0:
        return SmsSegments(encoding, 0, 0)
    segments = 1 if units <= single else -(-units // multi)
    return SmsSegments(encoding, units, segments)


_URL_RE = re.compile(r"https?://[^\s\"'<>]+")
_HREF_RE = re.compile(r"""href\s*=\s*(["'])(https?://[^"']+)\1""", re.IGNORECASE)


def links_extract(*texts: str) -> list[str]:
    """Every http(s) URL in the rendered parts, in order, without repeats."""
    seen: list[str] = []
    for text in texts:
        for _quote, url in _HREF_RE.findall(text or ""):
            url = html_lib.unescape(url)
            if url not in seen:
                seen.append(url)
        for url in _URL_RE.findall(text or ""):
            url = html_lib.unescape(url).rstrip(".,);")
            if url not in seen:
                seen.append(url)
    return seen


def html_links_rewrite(html: str, rewrite) -> str:
    """Replace every href URL with rewrite(url) (the click-tracking redirect)."""

    def _sub(match: re.Match) -> str:
        quote, url = match.group(1), match.group(2)
        return f"href={quote}{rewrite(html_lib.unescape(url))}{quote}"

    return _HREF_RE.sub(_sub, html)
