"""The raw floor of provider calls: plain keep-alive HTTP clients posting sends to a fake,
in processes of their own (no Django here: spawn imports only this module)."""

from __future__ import annotations

import time

import requests


def post_sends(url: str, auth: tuple[str, str], count: int, tag: str) -> tuple[float, float, int]:
    """POST `count` Twilio-shaped sends over one kept-alive connection. Returns
    (first start, last end) on time.time() and the number answered 201."""
    session = requests.Session()
    ok = 0
    started = time.time()
    for i in range(count):
        body = {"To": f"+1888{i:07d}", "From": "+15550000000", "Body": f"floor {tag} {i}"}
        if session.post(url, data=body, auth=auth, timeout=30).status_code == 201:
            ok += 1
    ended = time.time()
    session.close()
    return started, ended, ok
