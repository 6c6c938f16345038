"""The raw floor of provider calls: plain keep-alive HTTP clients posting sends to a fake,
in processes of their own (no Django here: spawn imports only this module).

urllib3 directly, the client the backends use (notifications/backends/transport.py) with
none of their work around it: `requests` cost about four times its CPU per call, and a
floor measured with it would flatter the ratio."""

from __future__ import annotations

import time
from urllib.parse import urlencode

import urllib3


def post_sends(url: str, auth: tuple[str, str], count: int, tag: str) -> tuple[float, float, int]:
    """POST `count` Twilio-shaped sends over one kept-alive connection. Returns
    (first start, last end) on time.time() and the number answered 201."""
    pool = urllib3.connection_from_url(url, maxsize=1, retries=False, timeout=30.0)
    headers = urllib3.make_headers(basic_auth=f"{auth[0]}:{auth[1]}")
    headers["Content-Type"] = "application/x-www-form-urlencoded"
    path = urllib3.util.parse_url(url).request_uri
    ok = 0
    started = time.time()
    for i in range(count):
        body = urlencode(
            {"To": f"+1888{i:07d}", "From": "+15550000000", "Body": f"floor {tag} {i}"}
        )
        response = pool.urlopen("POST", path, body=body, headers=headers, preload_content=True)
        if response.status == 201:
            ok += 1
    ended = time.time()
    pool.close()
    return started, ended, ok
