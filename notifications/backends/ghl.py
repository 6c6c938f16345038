"""GoHighLevel: SMS and email over the Conversations API, workflows and tasks over Contacts."""

from __future__ import annotations

import datetime as dt

from django.utils import timezone

from notifications.backends.base import (
    ConfigurationError,
    HttpBackend,
    PermanentError,
    SendResult,
)
from notifications.email_content import email_parts

CONVERSATIONS_VERSION = "2021-04-15"
CONTACTS_VERSION = "2021-07-28"


class GhlBackend(HttpBackend):
    provider = "ghl"
    api_version = CONVERSATIONS_VERSION

    def base_url(self) -> str:
        return str(self.option("base_url", "GHL_API_BASE_URL")).rstrip("/")

    def headers(self, message) -> dict[str, str]:
        token = self.option("api_token", "GHL_API_TOKEN")
        if not token:
            raise ConfigurationError(
                "no GHL access token (ChannelConfig api_token or GHL_API_TOKEN)"
            )
        return {
            "Authorization": f"Bearer {token}",
            "Version": self.api_version,
            "Accept": "application/json",
            # GHL does not document idempotency keys; sending one costs nothing and lets
            # a proxy or a future API deduplicate our retries.
            "Idempotency-Key": message.idempotency_key,
        }

    def rate_limit_key(self, message) -> str:
        # GHL limits per app per location: the bucket is shared by every worker.
        return f"ghl:{self.tenant.ghl_location_id or f'tenant-{self.tenant.pk}'}"

    def contact_id(self, message) -> str:
        if message.lead is None or not message.lead.external_id:
            raise PermanentError("a GHL send needs a lead with a GHL contact id")
        return message.lead.external_id

    def post(self, message, payload):
        path, body = payload
        response = self.http(
            "POST", self.base_url() + path, json=body, headers=self.headers(message)
        )
        self.raise_for_status(response)
        return response

    def _json(self, response) -> dict:
        try:
            return response.json()
        except ValueError:
            return {}


class GhlConversationBackend(GhlBackend):
    def parse_response(self, message, response) -> SendResult:
        body = self._json(response)
        message_id = body.get("messageId") or ""
        if not message_id:
            raise PermanentError(f"GHL answered without a messageId: {response.text[:300]}")
        status = body.get("status")
        if status == "failed":
            raise PermanentError("GHL reports the message failed", status_code=response.status_code)
        return SendResult(
            provider_message_id=message_id,
            status="delivered" if status in ("delivered", "read") else "sent",
            status_code=response.status_code,
            raw=body,
        )


class GhlSmsBackend(GhlConversationBackend):
    channel = "sms"

    def build_payload(self, message):
        body = {"type": "SMS", "contactId": self.contact_id(message), "message": message.body_text}
        if self.options.get("from_number"):
            body["fromNumber"] = self.options["from_number"]
        return "/conversations/messages", body


class GhlEmailBackend(GhlConversationBackend):
    channel = "email"

    def build_payload(self, message):
        parts = email_parts(message)
        body = {
            "type": "Email",
            "contactId": self.contact_id(message),
            "subject": parts.subject,
            "html": parts.html,
            "message": parts.text,
        }
        if self.options.get("email_from"):
            body["emailFrom"] = self.options["email_from"]
        return "/conversations/messages", body


class GhlWorkflowBackend(GhlBackend):
    """Adds the contact to the workflow the tenant mapped to the message's template key."""

    channel = "ghl_workflow"
    api_version = CONTACTS_VERSION

    def workflow_id(self, message) -> str:
        workflows = self.options.get("workflows") or {}
        workflow_id = workflows.get(message.template_key) or self.options.get("workflow_id")
        if not workflow_id:
            raise ConfigurationError(
                f"no GHL workflow id for {message.template_key!r} "
                "(ChannelConfig options 'workflows' or 'workflow_id')"
            )
        return workflow_id

    def build_payload(self, message):
        path = f"/contacts/{self.contact_id(message)}/workflow/{self.workflow_id(message)}"
        return path, {"eventStartTime": timezone.now().isoformat(timespec="seconds")}

    def parse_response(self, message, response) -> SendResult:
        body = self._json(response)
        if body.get("succeded") is False or body.get("succeeded") is False:
            raise PermanentError(
                f"GHL did not add the contact to the workflow: {response.text[:300]}"
            )
        return SendResult(
            provider_message_id=f"workflow:{self.workflow_id(message)}:{self.contact_id(message)}",
            status="delivered",
            status_code=response.status_code,
            raw=body,
        )


class GhlTaskBackend(GhlBackend):
    """Creates a task on the lead's contact, assigned to the message's agent."""

    channel = "ghl_task"
    api_version = CONTACTS_VERSION

    def build_payload(self, message):
        agent = message.agent or (message.lead.assigned_agent if message.lead else None)
        hours = float(self.options.get("due_in_hours", 24))
        due = timezone.now() + dt.timedelta(hours=hours)
        body = {
            "title": message.subject or message.body_text[:80] or "Follow up",
            "body": message.body_text,
            "dueDate": due.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
            "completed": False,
        }
        if agent is not None and agent.ghl_user_id:
            body["assignedTo"] = agent.ghl_user_id
        return f"/contacts/{self.contact_id(message)}/tasks", body

    def parse_response(self, message, response) -> SendResult:
        task = self._json(response).get("task") or {}
        if not task.get("id"):
            raise PermanentError(f"GHL answered without a task id: {response.text[:300]}")
        return SendResult(
            provider_message_id=task["id"],
            status="delivered",
            status_code=response.status_code,
            raw=task,
        )
