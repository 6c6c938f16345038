"""One WebSocket frame per broadcast event, written as is to every socket daphne holds.

A lifecycle event goes to every dashboard socket of its tenant in this process
(tracking.consumers._TenantFanout). Through ASGI, each socket's copy took its own trip:
daphne's ``handle_reply`` checks the message, autobahn's ``sendMessage`` builds the
frame (header, length, its debug-log arguments) and hands the bytes to the transport.
With 200 sockets that is 200 identical frames built one after another on one core.

A server's frame to a client is not masked (RFC 6455, 5.1), so the bytes are the same
for every socket: they are built once per event here (autobahn's ``PreparedMessage``, the
library's own broadcast helper) and written to each socket's transport, straight to the
kernel when nothing is buffered before them (``send_now``).

This reaches under ASGI, into the server: ``frame_writer`` finds daphne's protocol behind
an ASGI ``send`` (daphne passes ``partial(server.handle_reply, protocol)``) and returns a
writer only when the socket is plain enough to take the prepared bytes: an autobahn
WebSocket protocol without per-message compression. Anything else (another server, the
test communicator, a compressed socket) gets ``None`` and keeps the ASGI send, and the
writer itself declines (returns False) whenever the ASGI path would do something other
than write the frame: the socket is not open, daphne has marked it disconnected, or
autobahn has queued sends of its own (a close in progress) that the frame must not jump.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from functools import partial

try:  # daphne's own dependencies; without them there is nothing to reach under
    from autobahn.websocket.protocol import PreparedMessage, WebSocketProtocol
    from twisted.internet.tcp import Connection
except ImportError:  # pragma: no cover - daphne is a dependency of this project
    PreparedMessage = WebSocketProtocol = Connection = None

FrameWriter = Callable[[bytes], bool]


def text_frames(texts: Sequence[str]) -> bytes:
    """The unmasked WebSocket text frames of `texts`, in order, as one byte string."""
    return b"".join(
        PreparedMessage(text.encode("utf-8"), False, False, True).payloadHybi for text in texts
    )


def send_now(transport, data: bytes) -> None:
    """``transport.write(data)``, but onto the wire now when nothing waits before it.

    Twisted's write only buffers: it registers the socket with the reactor for writing
    (an ``epoll_ctl``), and on the loop's next turn the reactor calls back, sends, and
    unregisters it (another). Per socket of a fan-out that bookkeeping cost more than
    the ``send`` itself (py-spy of the 200-socket broadcast benchmark: the reactor's
    write callbacks and registrations about 45 % of daphne's samples, the syscall 21 %).

    A plain TCP transport with an empty buffer gets the bytes through its own
    ``writeSomeData`` (one non-blocking ``send``, at most SEND_LIMIT); whatever the kernel
    did not take, or any error, goes to ``write`` as before, so order is kept and a lost
    connection is found and closed by the reactor the usual way. Anything else (TLS, a
    buffer not yet flushed, a closing connection) is a plain ``write``."""
    if (
        Connection is not None
        and isinstance(transport, Connection)
        and not transport.TLS
        and transport.connected
        and not transport.disconnecting
        and not transport._writeDisconnected
        and not transport._tempDataLen
        and transport.offset == len(transport.dataBuffer)
    ):
        sent = transport.writeSomeData(data)
        if isinstance(sent, int) and sent >= 0:
            if sent == len(data):
                return
            data = data[sent:]
    transport.write(data)


def frame_writer(send) -> FrameWriter | None:
    """A writer of prepared frames to the socket behind ASGI `send`, or None when that
    socket is not a plain daphne WebSocket (see the module docstring)."""
    if PreparedMessage is None or not isinstance(send, partial) or len(send.args) != 1:
        return None
    protocol = send.args[0]
    server = getattr(send.func, "__self__", None)
    connections = getattr(server, "connections", None)
    if not isinstance(protocol, WebSocketProtocol) or not isinstance(connections, dict):
        return None
    if getattr(send.func, "__name__", "") != "handle_reply":
        return None

    def write(frames: bytes) -> bool:
        entry = connections.get(protocol)
        if (
            entry is None
            or entry.get("disconnected")
            or protocol.state != WebSocketProtocol.STATE_OPEN
            or protocol._perMessageCompress is not None
            or protocol.send_queue
        ):
            return False
        send_now(protocol.transport, frames)
        return True

    return write
