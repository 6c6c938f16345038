"""The providers' HTTP client (notifications.backends.transport) through HttpBackend.http:
kept-alive connections per process, a forked child's own connections, no retries or
redirects at this layer, and each way a call can fail mapped to what the send pipeline
must do (retry, never resend, fail)."""

from __future__ import annotations

import base64
import datetime as dt
import ipaddress
import os
import socket
import ssl
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from notifications.backends.base import (
    ConfigurationError,
    HttpBackend,
    PermanentError,
    TransientError,
    UnknownOutcomeError,
)
from tests.fakes.http import Answer, FakeServer


@pytest.fixture
def fake():
    server = FakeServer().start()
    yield server
    server.stop()


@pytest.fixture
def backend(settings) -> HttpBackend:
    settings.NOTIFICATIONS_HTTP_CONNECT_TIMEOUT = 1.0
    settings.NOTIFICATIONS_HTTP_READ_TIMEOUT = 1.0
    return HttpBackend(tenant=None, options={})


def test_sends_reuse_one_kept_alive_connection(backend, fake):
    for n in range(3):
        assert backend.http("POST", f"{fake.url}/send", json={"n": n}).status_code == 200
    assert [r.json() for r in fake.requests] == [{"n": 0}, {"n": 1}, {"n": 2}]
    assert len({r.peer for r in fake.requests}) == 1


def test_a_forked_child_makes_its_own_connection_and_leaves_the_parents_alone(backend, fake):
    # given the parent's kept-alive connection
    assert backend.http("GET", f"{fake.url}/parent").status_code == 200
    # when a forked child (a prefork pool process) sends
    pid = os.fork()
    if pid == 0:  # the child: never return into pytest
        try:
            code = 0 if backend.http("GET", f"{fake.url}/child").status_code == 200 else 1
        except BaseException:
            code = 2
        os._exit(code)
    _, status = os.waitpid(pid, 0)
    # then it used a connection of its own, and the parent's still works
    assert os.waitstatus_to_exitcode(status) == 0
    assert backend.http("GET", f"{fake.url}/parent").status_code == 200
    peers = {r.path: set() for r in fake.requests}
    for r in fake.requests:
        peers[r.path].add(r.peer)
    assert len(peers["/parent"]) == 1 and len(peers["/child"]) == 1
    assert peers["/parent"] != peers["/child"]


def test_form_body_basic_auth_and_query_are_encoded_as_providers_expect(backend, fake):
    backend.http(
        "POST",
        f"{fake.url}/Messages.json",
        data={"To": "+15125550123", "Body": "Hi & bye", "Skip": None, "Media": ["a", "b"]},
        auth=("AC123", "tok:en"),
    )
    backend.http("GET", f"{fake.url}/Messages.json", params={"DateSent>": "2026-12-01"})
    form, query = fake.requests
    assert form.headers["content-type"] == "application/x-www-form-urlencoded"
    assert form.form() == {"To": "+15125550123", "Body": "Hi & bye", "Media": "a"}
    assert form.body.count(b"Media=") == 2 and b"Skip" not in form.body
    assert form.headers["authorization"] == "Basic " + base64.b64encode(b"AC123:tok:en").decode()
    assert query.query == {"DateSent>": ["2026-12-01"]}


def test_no_cookie_rides_along_to_the_next_request(backend, fake):
    fake.program(Answer(200, headers={"Set-Cookie": "session=tenant-a; Path=/"}))
    backend.http("GET", f"{fake.url}/a")
    backend.http("GET", f"{fake.url}/b")
    assert "cookie" not in fake.requests[1].headers


def test_a_5xx_is_transient_with_retry_after_and_is_not_retried_here(backend, fake):
    fake.program(Answer(503, headers={"Retry-After": "7"}, body={"error": "busy"}))
    response = backend.http("POST", f"{fake.url}/send", json={})
    with pytest.raises(TransientError) as caught:
        backend.raise_for_status(response)
    assert caught.value.retry_after == 7.0 and caught.value.status_code == 503
    assert "busy" in str(caught.value)
    assert len(fake.requests) == 1


def test_a_redirect_is_not_followed(backend, fake):
    fake.program(Answer(302, headers={"Location": f"{fake.url}/elsewhere"}))
    response = backend.http("POST", f"{fake.url}/send", json={})
    with pytest.raises(PermanentError):
        backend.raise_for_status(response)
    assert [r.path for r in fake.requests] == ["/send"]


def test_connection_refused_is_transient(backend):
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    with pytest.raises(TransientError, match="connection failed"):
        backend.http("POST", f"http://127.0.0.1:{port}/send", json={})


def test_a_connect_that_times_out_is_transient(backend, settings):
    # A listener whose accept queue is full: the kernel drops the next SYN.
    settings.NOTIFICATIONS_HTTP_CONNECT_TIMEOUT = 0.3
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(0)
    port = listener.getsockname()[1]
    queued = []
    try:
        for _ in range(4):
            client = socket.socket()
            client.setblocking(False)
            client.connect_ex(("127.0.0.1", port))
            queued.append(client)
        with pytest.raises(TransientError, match="connect timeout"):
            backend.http("POST", f"http://127.0.0.1:{port}/send", json={})
    finally:
        for client in queued:
            client.close()
        listener.close()


def test_no_answer_within_the_read_timeout_is_unknown(backend, fake, settings):
    settings.NOTIFICATIONS_HTTP_READ_TIMEOUT = 0.2
    fake.program(Answer(hang=True))
    try:
        with pytest.raises(UnknownOutcomeError, match="no answer within 0.2s"):
            backend.http("POST", f"{fake.url}/send", json={})
        assert len(fake.requests) == 1
    finally:
        fake.release()


def test_a_connection_closed_after_the_request_is_unknown(backend):
    # given a server that reads the request and hangs up without answering
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(1)
    received = []

    def serve() -> None:
        conn, _ = listener.accept()
        received.append(conn.recv(65536))
        conn.close()

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        with pytest.raises(UnknownOutcomeError, match="connection lost after the request"):
            backend.http(
                "POST", f"http://127.0.0.1:{listener.getsockname()[1]}/send", json={"a": 1}
            )
    finally:
        thread.join(5)
        listener.close()
    assert received and received[0].startswith(b"POST /send ")


def test_a_url_that_cannot_be_called_is_a_configuration_error(backend):
    with pytest.raises(ConfigurationError):
        backend.http("POST", "ftp://provider.example/send", json={})


def test_a_certificate_that_does_not_verify_is_refused_before_anything_is_sent(backend, tmp_path):
    # given an HTTPS provider whose certificate no trusted CA signed
    server, seen = _tls_server(tmp_path)
    try:
        url = f"https://127.0.0.1:{server.server_address[1]}/send"
        # then the call fails and the server never read a request
        with pytest.raises(TransientError, match="certificate"):
            backend.http("POST", url, json={})
        assert seen == []
    finally:
        server.shutdown()
        server.server_close()


def _tls_server(tmp_path) -> tuple[ThreadingHTTPServer, list[str]]:
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(days=1))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
        .sign(key, hashes.SHA256())
    )
    cert_file, key_file = tmp_path / "cert.pem", tmp_path / "key.pem"
    cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    seen: list[str] = []

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            seen.append(self.path)
            self.send_response(200)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *args) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert_file, key_file)
    server.socket = context.wrap_socket(server.socket, server_side=True)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server, seen
