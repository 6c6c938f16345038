"""The email a message becomes at send time: tracked links, open pixel, unsubscribe parts."""

from __future__ import annotations

from dataclasses import dataclass

from django.conf import settings

from notifications.recipients import public_reverse
from notifications.templating import html_links_rewrite
from notifications.tokens import token_make

# Rendered into templates where {{ unsubscribe_url }} stands; the real, signed URL
# needs the message id, which exists only after the row is created.
UNSUBSCRIBE_PLACEHOLDER = "__UNSUBSCRIBE_URL__"


@dataclass
class EmailParts:
    subject: str
    text: str
    html: str
    headers: dict[str, str]
    unsubscribe_url: str


def unsubscribe_url(message_id: int) -> str:
    return public_reverse(
        "notifications_tracking:unsubscribe",
        token=token_make(purpose="unsubscribe", message_id=message_id),
    )


def click_url(message_id: int, url: str) -> str:
    return public_reverse(
        "notifications_tracking:click",
        token=token_make(purpose="click", message_id=message_id, url=url),
    )


def open_pixel_url(message_id: int) -> str:
    return public_reverse(
        "notifications_tracking:open", token=token_make(purpose="open", message_id=message_id)
    )


def email_parts(message) -> EmailParts:
    unsub = unsubscribe_url(message.pk)
    text = message.body_text.replace(UNSUBSCRIBE_PLACEHOLDER, unsub)
    if unsub not in text:
        text = f"{text}\n\n--\nUnsubscribe: {unsub}"
    html = message.body_html.replace(UNSUBSCRIBE_PLACEHOLDER, unsub)
    if not html:
        html = (
            "<p>"
            + "</p><p>".join(
                part.replace("&", "&amp;").replace("<", "&lt;")
                for part in message.body_text.split("\n\n")
            )
            + "</p>"
        )
        html = html.replace(UNSUBSCRIBE_PLACEHOLDER, unsub)
    if unsub not in html:
        html += f'<p style="font-size:12px"><a href="{unsub}">Unsubscribe</a></p>'
    if settings.NOTIFICATIONS_TRACK_CLICKS:
        html = html_links_rewrite(
            html, lambda url: url if url == unsub else click_url(message.pk, url)
        )
    if settings.NOTIFICATIONS_TRACK_OPENS:
        pixel = f'<img src="{open_pixel_url(message.pk)}" width="1" height="1" alt="">'
        html = html.replace("</body>", pixel + "</body>") if "</body>" in html else html + pixel
    headers = {
        "List-Unsubscribe": f"<{unsub}>",
        "List-Unsubscribe-Post": "List-Unsubscribe=One-Click",
    }
    return EmailParts(
        subject=message.subject, text=text, html=html, headers=headers, unsubscribe_url=unsub
    )
