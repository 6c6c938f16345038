"""Inbound webhooks: GHL posts here, authenticated by its signature, not an API key."""

from __future__ import annotations

from django.core.exceptions import RequestDataTooBig
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework import serializers
from rest_framework.permissions import AllowAny
from rest_framework.response import Response
from rest_framework.views import APIView

from churnapp.api.common import error_responses
from churnapp.exceptions import PayloadTooLargeError, content_type_require
from churnapp.services.webhooks import ED25519_HEADER, RSA_HEADER, ghl_webhook_receive


class WebhookAcceptedSerializer(serializers.Serializer):
    status = serializers.CharField(
        help_text="accepted, or duplicate: this webhookId was received before and was not "
        "stored twice."
    )
    webhook_event_id = serializers.IntegerField()


class GhlWebhookView(APIView):
    """Receive a GHL webhook for one tenant.

    The raw body must carry a valid `x-ghl-signature` (Ed25519) or legacy
    `x-wh-signature` (RSA-SHA256). The event is stored and answered 200 at once; a
    worker applies it. A repeated `webhookId` is answered 200 with status "duplicate"
    (GHL stops retrying) and is not stored again. Every refusal stores nothing: a body
    that is not application/json (415), too large (413), malformed or nested deeper
    than 32 levels (400).
    """

    authentication_classes: list = []
    permission_classes = [AllowAny]

    @extend_schema(
        tags=["webhooks"],
        auth=[],
        request={"application/json": OpenApiTypes.OBJECT},
        parameters=[
            OpenApiParameter(ED25519_HEADER, str, OpenApiParameter.HEADER, required=False),
            OpenApiParameter(RSA_HEADER, str, OpenApiParameter.HEADER, required=False),
        ],
        responses={
            200: WebhookAcceptedSerializer,
            **error_responses(400, 401, 403, 404, 413, 415, 503),
        },
    )
    def post(self, request, tenant_slug: str):
        content_type_require(request.content_type, "application/json")
        try:
            # The signature covers the exact bytes GHL sent, never re-serialized JSON.
            body = request.body
        except RequestDataTooBig:
            raise PayloadTooLargeError(
                "The webhook body exceeds the size limit; nothing was stored."
            )
        receipt = ghl_webhook_receive(
            tenant_slug=tenant_slug, body=body, headers=dict(request.headers)
        )
        return Response(
            {
                "status": "duplicate" if receipt.duplicate else "accepted",
                "webhook_event_id": receipt.event.pk,
            }
        )
