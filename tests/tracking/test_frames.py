"""Prepared broadcast frames (tracking.frames): the bytes daphne would have sent, written
only to a socket that can take them as they are."""

from __future__ import annotations

import asyncio
import socket
from functools import partial

import pytest
from daphne.server import Server
from daphne.ws_protocol import WebSocketFactory
from twisted.internet.protocol import Protocol
from twisted.internet.tcp import Connection
from twisted.internet.testing import MemoryReactor, StringTransport

from tracking.frames import frame_writer, send_now, text_frames


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
def test_the_writer_declines_a_socket_the_asgi_path_would_not_simply_write_to(daphne_socket, state):
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


@pytest.fixture
def tcp_pair():
    """A Twisted TCP transport on one end of a real connected socket pair (the other end
    read directly), on a memory reactor: what daphne's protocol writes to."""
    ours, theirs = socket.socketpair()
    reactor = MemoryReactor()
    transport = Connection(ours, Protocol(), reactor=reactor)
    transport.connected = 1
    theirs.settimeout(5)
    yield transport, theirs, reactor
    ours.close()
    theirs.close()


def _read_exactly(sock, n: int) -> bytes:
    got = b""
    while len(got) < n:
        got += sock.recv(n - len(got))
    return got


def test_send_now_puts_the_bytes_on_the_wire_without_the_reactor(tcp_pair):
    transport, theirs, reactor = tcp_pair
    send_now(transport, b"frame one")
    # on the wire already, and the socket never registered for writing
    assert _read_exactly(theirs, 9) == b"frame one"
    assert transport not in reactor.getWriters()
    assert transport.dataBuffer == b"" and not transport._tempDataBuffer


def test_send_now_queues_behind_bytes_still_buffered_in_order(tcp_pair):
    # given bytes the transport buffered and has not sent yet
    transport, theirs, reactor = tcp_pair
    transport.write(b"earlier ")
    # when a frame is sent now
    send_now(transport, b"later")
    # then it waits behind them: nothing reaches the wire until the reactor writes
    theirs.setblocking(False)
    with pytest.raises(BlockingIOError):
        theirs.recv(100)
    assert transport in reactor.getWriters()
    transport.doWrite()
    theirs.setblocking(True)
    assert _read_exactly(theirs, 13) == b"earlier later"


def test_what_the_kernel_does_not_take_now_is_buffered_and_follows(tcp_pair):
    # given more than the socket's send buffer takes at once
    transport, theirs, reactor = tcp_pair
    big = bytes(range(256)) * 40_000  # 10 MB
    send_now(transport, big)
    # then the rest waits in the transport, and the reactor is asked to write it
    assert transport in reactor.getWriters()
    got = b""
    while len(got) < len(big):
        got += theirs.recv(1 << 20)
        transport.doWrite()
    assert got == big


def test_a_closing_or_closed_transport_takes_the_plain_write(tcp_pair):
    transport, theirs, reactor = tcp_pair
    transport.disconnecting = True
    send_now(transport, b"x")
    assert transport._tempDataLen == 1  # buffered as write() would, not sent now
    transport.disconnecting = False
    transport.connected = 0
    send_now(transport, b"y")  # write() drops bytes for a lost connection
    assert transport._tempDataLen == 1


def test_daphne_hands_its_applications_a_send_the_writer_recognises(daphne_socket):
    """What a daphne upgrade could change under us: the shape of the ASGI send it gives an
    application instance. Were it no longer recognised, every broadcast would quietly
    take the slow path again."""
    server, protocol, _ = daphne_socket
    sends = []

    async def application(scope, receive, send):
        sends.append(send)

    async def start():
        server.application = application
        server.connections[protocol] = {"connected": 0.0}
        server.create_application(protocol, {"type": "websocket"})
        await server.connections[protocol]["application_instance"]

    asyncio.run(start())
    assert len(sends) == 1
    assert frame_writer(sends[0]) is not None
