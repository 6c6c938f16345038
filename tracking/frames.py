"""One WebSocket frame per broadcast event, written as is to every socket daphne holds.

A lifecycle event goes to every dashboard socket of its tenant in this process
(tracking.consumers._TenantFanout). Through ASGI, each socket's copy took its own trip:
daphne's ``handle_reply`` checks the message, autobahn's ``sendMessage`` builds the
frame (header, length, its debug-log arguments) and hands the bytes to the transport.
With 200 sockets that is 200 identical frames built one after another on one core.

A server's frame to a client is not masked (RFC 6455, 5.1), so the bytes are the same
for every socket: they are built once per event here (autobahn's ``PreparedMessage``, the
library's own broadcast helper) and written to each socket's transport.

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

try:  # daphne's own dependency; without it there is nothing to reach under
    from autobahn.websocket.protocol import PreparedMessage, WebSocketProtocol
except ImportError:  # pragma: no cover - daphne is a dependency of this project
    PreparedMessage = WebSocketProtocol = None

FrameWriter = Callable[[bytes], bool]


def text_frames(texts: Sequence[str]) -> bytes:
    """The unmasked WebSocket text frames of `texts`, in order, as one byte string."""
    return b"".join(
        PreparedMessage(text.encode("utf-8"), False, False, True).payloadHybi for text in texts
    )


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
        protocol.transport.write(frames)
        return True

    return write
