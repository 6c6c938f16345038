"""Prepared broadcast frames (tracking.frames): the bytes daphne would have sent, written
only to a socket that can take them as they are."""

from __future__ import annotations

import asyncio
from functools import partial

import pytest
from daphne.server import Server
from daphne.ws_protocol import WebSocketFactory
from twisted.internet.testing import StringTransport

from tracking.frames import frame_writer, text_frames


@pytest.fixture
def daphne_socket():
    """A daphne server and one of its WebSocket protocols, open, on an in-memory
    transport: what the consumer's ASGI send is bound to under a running daphne."""
    server = Server(application=None, endpoints=["tcp:port=0"], signal_handlers=False)
    server.connections = {}  # Server.run() sets it
    protocol = WebSocketFactory(server, server="Daphne").buildProtocol(None)
    transport = StringTransport()
    protocol.makeConnection(transport)
    protocol.state = protocol.STATE_OPEN
    protocol.client_addr = ["127.0.0.1", 50000]
    server.connections[protocol] = {"connected": 0.0}
    return server, protocol, transport


def _sent_through_asgi(server, protocol, transport, text: str) -> bytes:
    transport.clear()
    asyncio.run(server.handle_reply(protocol, {"type": "websocket.send", "text": text}))
    sent = transport.value()
    transport.clear()
    return sent


@pytest.mark.parametrize("length", [1, 125, 126, 65535, 65536, 200_000])
def test_a_prepared_frame_is_the_bytes_daphne_sends_for_the_same_text(daphne_socket, length):
    # given a text across the frame header's three length encodings, not all ASCII
    server, protocol, transport = daphne_socket
    text = ("é" + "x" * 9) * (length // 10) + "y" * (length % 10)
    # when it is prepared once and written through the socket's writer
    write = frame_writer(partial(server.handle_reply, protocol))
    assert write is not None
    assert write(text_frames([text]))
    # then the wire bytes are exactly those daphne's own send produces
    prepared = transport.value()
    assert prepared == _sent_through_asgi(server, protocol, transport, text)
    assert len(prepared) > len(text.encode())  # a header, unmasked


def test_several_events_are_one_write_of_a_frame_each_in_order(daphne_socket):
    server, protocol, transport = daphne_socket
    write = frame_writer(partial(server.handle_reply, protocol))
    assert write(text_frames(['{"id": 1}', '{"id": 2}']))
    one = _sent_through_asgi(server, protocol, transport, '{"id": 1}')
    two = _sent_through_asgi(server, protocol, transport, '{"id": 2}')
    assert write(text_frames(['{"id": 1}', '{"id": 2}']))
    assert transport.value() == one + two


@pytest.mark.parametrize(
    "state",
    ["disconnected", "closing", "compressed", "queued", "unknown to the server"],
)
def test_the_writer_declines_a_socket_the_asgi_path_would_not_simply_write_to(
    daphne_socket, state
):
    # given a socket that is not plainly open
    server, protocol, transport = daphne_socket
    write = frame_writer(partial(server.handle_reply, protocol))
    if state == "disconnected":
        server.connections[protocol]["disconnected"] = 1.0
    elif state == "closing":
        protocol.state = protocol.STATE_CLOSING
    elif state == "compressed":
        protocol._perMessageCompress = object()
    elif state == "queued":
        protocol.send_queue.append((b"close frame", True))
    else:
        del server.connections[protocol]
    # then nothing is written, and the caller is told to use the ASGI send
    assert write(text_frames(["x"])) is False
    assert transport.value() == b""


def test_other_servers_and_wrapped_sends_keep_the_asgi_path(daphne_socket):
    server, protocol, _ = daphne_socket

    async def plain_send(message):  # another server, channels' test communicator
        pass

    assert frame_writer(plain_send) is None
    assert frame_writer(partial(plain_send)) is None
    assert frame_writer(partial(server.handle_reply, object())) is None
    assert frame_writer(partial(server.check_headers_type, protocol)) is None
