"""An image host that stalls: it answers the headers and a few bytes of a PNG, then nothing
(`/partial.png`), or accepts the connection and never answers (`/silent.png`)."""

from __future__ import annotations

import socketserver
import threading
from collections.abc import Iterator
from contextlib import contextmanager

from tests.utils.images import encode, gradient_image

STALL_S = 120


class _StallingHandler(socketserver.BaseRequestHandler):
    def handle(self) -> None:
        request = b""
        while b"\r\n\r\n" not in request:
            chunk = self.request.recv(4096)
            if not chunk:
                return
            request += chunk
        stop: threading.Event = self.server.stop  # type: ignore[attr-defined]
        if b" /partial.png " in request.split(b"\r\n", 1)[0]:
            png = encode(gradient_image(64, 64), "PNG")
            head = (
                f"HTTP/1.1 200 OK\r\nContent-Type: image/png\r\nContent-Length: {len(png)}\r\n\r\n"
            )
            self.request.sendall(head.encode() + png[:100])
        stop.wait(STALL_S)


class _Server(socketserver.ThreadingTCPServer):
    daemon_threads = True
    allow_reuse_address = True


@contextmanager
def stalling_image_host() -> Iterator[str]:
    """Yields the host:port to allow; the server stops (and its stalls end) on exit."""
    server = _Server(("127.0.0.1", 0), _StallingHandler)
    server.stop = threading.Event()  # type: ignore[attr-defined]
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"127.0.0.1:{server.server_address[1]}"
    finally:
        server.stop.set()  # type: ignore[attr-defined]
        server.shutdown()
        server.server_close()
