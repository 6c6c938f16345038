"""DRF views: push subscription registration and provider callbacks (signed, public)."""

from __future__ import annotations

from django.conf import settings
from django.db import transaction
from django.http import HttpResponse
from django.utils.xmlutils import SimplerXMLGenerator
from drf_spectacular.utils import extend_schema, inline_serializer
from rest_framework import serializers, status
from rest_framework.permissions import AllowAny
from rest_framework.response import Response
from rest_framework.views import APIView

from churnapp.exceptions import ApplicationError, NotFoundError, content_type_require
from churnapp.models import Lead, Tenant
from churnapp.normalize import json_loads_bounded
from notifications.models import Channel, ChannelConfig, Message, PushSubscription
from notifications.services.callbacks import (
    message_engagement_record,
    message_provider_status_record,
    sms_inbound_record,
    twilio_status_callback_record,
)
from notifications.webhook_auth import hmac_request_verify, twilio_verify


def _tenant(slug: str) -> Tenant:
    tenant = Tenant.objects.filter(slug=slug, is_active=True).first()
    if tenant is None:
        raise NotFoundError("unknown tenant")
    return tenant


def _channel_option(tenant: Tenant, channel: str, name: str, setting: str) -> str:
    config = ChannelConfig.objects.filter(tenant=tenant, channel=channel).first()
    value = (config.options.get(name) if config else None) or getattr(settings, setting, "")
    return value or ""


class PushSubscriptionRegisterApi(APIView):
    """The dashboard registers a browser's Web Push subscription for the signed-in agent
    (session), or, with an API key, for a lead given by its external id."""

    class PushSubscriptionInputSerializer(serializers.Serializer):
        endpoint = serializers.URLField(max_length=1000)
        keys = inline_serializer(
            "PushKeys",
            fields={
                "p256dh": serializers.CharField(max_length=200),
                "auth": serializers.CharField(max_length=100),
            },
        )
        lead_external_id = serializers.CharField(required=False, max_length=128)

    class PushSubscriptionOutputSerializer(serializers.ModelSerializer):
        class Meta:
            model = PushSubscription
            fields = ["id", "endpoint", "agent", "lead", "is_active", "created_at"]

    @extend_schema(
        request=PushSubscriptionInputSerializer, responses={201: PushSubscriptionOutputSerializer}
    )
    def post(self, request):
        data = self.PushSubscriptionInputSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        tenant = request.tenant
        owner: dict = {}
        user = request.user
        agent = getattr(user, "agent", None) if user is not None and user.is_authenticated else None
        if agent is not None and agent.tenant_id == tenant.pk:
            owner = {"agent": agent, "lead": None}
        elif data.validated_data.get("lead_external_id"):
            lead = Lead.objects.filter(
                tenant=tenant, external_id=data.validated_data["lead_external_id"]
            ).first()
            if lead is None:
                raise NotFoundError("no such lead in this tenant")
            owner = {"lead": lead, "agent": None}
        else:
            raise ApplicationError(
                "sign in as an agent, or give lead_external_id", code="no_recipient"
            )
        with transaction.atomic():
            sub, _ = PushSubscription.objects.update_or_create(
                tenant=tenant,
                endpoint=data.validated_data["endpoint"],
                defaults={
                    **owner,
                    "p256dh": data.validated_data["keys"]["p256dh"],
                    "auth": data.validated_data["keys"]["auth"],
                    "user_agent": request.headers.get("User-Agent", "")[:300],
                    "is_active": True,
                },
            )
        return Response(
            self.PushSubscriptionOutputSerializer(sub).data, status=status.HTTP_201_CREATED
        )


class PushSubscriptionDeleteApi(APIView):
    class PushSubscriptionDeleteInputSerializer(serializers.Serializer):
        endpoint = serializers.URLField(max_length=1000)

    @extend_schema(request=PushSubscriptionDeleteInputSerializer, responses={204: None})
    def post(self, request):
        data = self.PushSubscriptionDeleteInputSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        deleted, _ = PushSubscription.objects.filter(
            tenant=request.tenant, endpoint=data.validated_data["endpoint"]
        ).delete()
        if not deleted:
            raise NotFoundError("no such subscription")
        return Response(status=status.HTTP_204_NO_CONTENT)


# Twilio posts application/x-www-form-urlencoded; multipart carries the same fields.
FORM_TYPES = ("application/x-www-form-urlencoded", "multipart/form-data")


class _PublicCallbackApi(APIView):
    authentication_classes: list = []
    permission_classes = [AllowAny]
    # Provider callbacks are not the API's clients: no per-key limit applies to them.
    throttle_classes: list = []

    def signed_url(self, request) -> str:
        # The URL the provider signed is our public one, not what a proxy forwarded.
        return settings.PUBLIC_BASE_URL.rstrip("/") + request.get_full_path()


class TwilioStatusCallbackApi(_PublicCallbackApi):
    """Twilio's message status callback (form-encoded, X-Twilio-Signature)."""

    @extend_schema(request=None, responses={204: None})
    def post(self, request, tenant_slug: str):
        content_type_require(request.content_type, *FORM_TYPES)
        tenant = _tenant(tenant_slug)
        params = {key: request.POST.get(key) for key in request.POST}
        twilio_verify(
            auth_token=_channel_option(tenant, Channel.SMS, "auth_token", "TWILIO_AUTH_TOKEN"),
            url=self.signed_url(request),
            params=params,
            signature=request.headers.get("X-Twilio-Signature", ""),
        )
        twilio_status_callback_record(
            tenant=tenant, params=params, message_id=request.GET.get("mid")
        )
        return Response(status=status.HTTP_204_NO_CONTENT)


class TwilioInboundSmsApi(_PublicCallbackApi):
    """An SMS to the tenant's Twilio number: keywords, replies; answered with TwiML."""

    @extend_schema(request=None, responses={200: None})
    def post(self, request, tenant_slug: str):
        content_type_require(request.content_type, *FORM_TYPES)
        tenant = _tenant(tenant_slug)
        params = {key: request.POST.get(key) for key in request.POST}
        twilio_verify(
            auth_token=_channel_option(tenant, Channel.SMS, "auth_token", "TWILIO_AUTH_TOKEN"),
            url=self.signed_url(request),
            params=params,
            signature=request.headers.get("X-Twilio-Signature", ""),
        )
        result = sms_inbound_record(
            tenant=tenant,
            from_phone=params.get("From") or "",
            body=params.get("Body") or "",
            provider="twilio",
            event_id=params.get("MessageSid") or params.get("SmsSid") or "",
        )
        response = HttpResponse(content_type="application/xml")
        xml = SimplerXMLGenerator(response, "utf-8")
        xml.startDocument()
        xml.startElement("Response", {})
        if result.reply_text:
            xml.addQuickElement("Message", result.reply_text)
        xml.endElement("Response")
        xml.endDocument()
        return response


class InAppCallbackApi(_PublicCallbackApi):
    """The brokerage app reports `received` or `read` for an in-app message (HMAC signed)."""

    class InAppCallbackInputSerializer(serializers.Serializer):
        event = serializers.ChoiceField(choices=["received", "read"])
        message_id = serializers.IntegerField()
        event_id = serializers.CharField(max_length=200)
        occurred_at = serializers.DateTimeField(required=False)

    @extend_schema(request=InAppCallbackInputSerializer, responses={204: None})
    def post(self, request, tenant_slug: str):
        content_type_require(request.content_type, "application/json")
        tenant = _tenant(tenant_slug)
        body = request.body
        hmac_request_verify(
            secret=_channel_option(tenant, Channel.IN_APP, "secret", "IN_APP_WEBHOOK_SECRET"),
            timestamp=request.headers.get("X-Timestamp", ""),
            body=body,
            signature=request.headers.get("X-Signature", ""),
        )
        try:
            data = self.InAppCallbackInputSerializer(data=json_loads_bounded(body))
        except ValueError as exc:
            raise ApplicationError(f"the body is not acceptable JSON: {exc}", code="invalid_json")
        data.is_valid(raise_exception=True)
        message = Message.objects.filter(
            tenant=tenant, channel=Channel.IN_APP, pk=data.validated_data["message_id"]
        ).first()
        if message is None:
            raise NotFoundError("no such in-app message")
        event_id = f"in_app:{data.validated_data['event_id']}"
        if data.validated_data["event"] == "read":
            message_engagement_record(
                message=message,
                kind="opened",
                provider="in_app",
                event_id=event_id,
                occurred_at=data.validated_data.get("occurred_at"),
            )
        else:
            message_provider_status_record(
                tenant=tenant,
                provider="in_app",
                event_id=event_id,
                new_status="delivered",
                message=message,
                occurred_at=data.validated_data.get("occurred_at"),
            )
        return Response(status=status.HTTP_204_NO_CONTENT)
