"""Framed protocol between mindora-worker and a runner process (version 1).

Every message is one frame::

    u32 big-endian  N   length of what follows
    u32 big-endian  H   length of the header
    H bytes             header: a UTF-8 JSON object whose "t" names the message
    N - 4 - H bytes     body: opaque bytes (serialized return value, exc_string, ...)

Worker -> runner: ``job`` (tag, id, origin, serializer, timeout, and ``trace``: the W3C
headers of the worker's span, absent when tracing is off; see ``tracing``), ``callback`` (run a
job's failure/stopped callback after its process was killed), ``cancel`` (tag, reason; for
``async def`` jobs), ``exit``.
Runner -> worker: ``hello`` (protocol, pid, versions, async slots) once at start,
``started`` (tag, mode sync|async), ``phase`` (tag, callback timeout), ``meta`` (tag: the
job saved its meta), ``ok`` (body: serialized return value), ``err`` (body: exc_string),
``hb`` (heartbeat with RSS). ``ok``/``err`` carry the process RSS so the worker can recycle.

Within a version a message may gain optional fields (omitted when empty) and both sides
ignore header keys they do not know; anything an older peer would misread needs a new
version (the worker refuses a runner of another version).
"""

import json
import struct
import threading

PROTOCOL_VERSION = 1
MAX_FRAME = 512 * 1024 * 1024
_LEN = struct.Struct(">II")


class ProtocolError(Exception):
    """The peer sent something that is not a version-1 frame."""


def encode(header, body=b""):
    """One frame's bytes."""
    head = json.dumps(header, separators=(",", ":")).encode()
    return _LEN.pack(4 + len(head) + len(body), len(head)) + head + body


def read_exact(stream, n):
    """n bytes, or None at a clean end of stream."""
    chunks = []
    while n:
        chunk = stream.read(n)
        if not chunk:
            if chunks:
                raise ProtocolError("stream ended inside a frame")
            return None
        chunks.append(chunk)
        n -= len(chunk)
    return b"".join(chunks)


def read_frame(stream):
    """(header dict, body bytes), or None when the worker closed the pipe."""
    prefix = read_exact(stream, 8)
    if prefix is None:
        return None
    total, head_len = _LEN.unpack(prefix)
    if total > MAX_FRAME or head_len > total - 4:
        raise ProtocolError(f"bad frame lengths {total}/{head_len}")
    rest = read_exact(stream, total - 4)
    if rest is None:
        raise ProtocolError("stream ended inside a frame")
    header = json.loads(rest[:head_len])
    if not isinstance(header, dict) or "t" not in header:
        raise ProtocolError("frame header is not an object with a type")
    return header, rest[head_len:]


class Writer:
    """Thread-safe frame writer (the main thread, the event loop and the heartbeat share it)."""

    def __init__(self, stream):
        self._stream = stream
        self._lock = threading.Lock()

    def send(self, header, body=b""):
        data = encode(header, body)
        with self._lock:
            self._stream.write(data)
            self._stream.flush()
