"""A loopback reverse proxy in front of Orthanc, for the PACS set-ups Orthanc 1.10 lacks.

Orthanc still answers every request; the proxy only decides who gets through, as an ingress
or an API gateway in front of a hospital PACS would:
  /bearer/...   needs `Authorization: Bearer <token>`, then goes on with Orthanc's basic auth
  /forward/...  goes on with the caller's own Authorization header, unchanged (GET and POST:
                STOW-RS reaches Orthanc as the caller)
  /slow/...     waits `delay_s` first (a PACS that answers too late), then as /bearer/
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import httpx

from tests.utils.orthanc import Orthanc


class _Proxy(ThreadingHTTPServer):
    daemon_threads = True
    orthanc: Orthanc
    token: str
    delay_s: float

    def handle_error(self, request, client_address) -> None:  # noqa: ANN001
        pass  # a client that gave up (the slow route) is expected here


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _Proxy

    def log_message(self, format, *args) -> None:  # noqa: A002, ANN001 - keep pytest quiet
        pass

    def _send(self, status: int, body: bytes = b"", content_type: str | None = None) -> None:
        self.send_response(status)
        if content_type:
            self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_POST(self) -> None:
        route, _, rest = self.path.lstrip("/").partition("/")
        if route != "forward":
            self._send(405)
            return
        body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
        headers = {
            name: self.headers.get(name, "") for name in ("Authorization", "Accept", "Content-Type")
        }
        with httpx.Client(base_url=self.server.orthanc.url, timeout=30, trust_env=False) as http:
            answer = http.post("/" + rest, headers=headers, content=body)
        self._send(answer.status_code, answer.content, answer.headers.get("content-type"))

    def do_GET(self) -> None:
        route, _, rest = self.path.lstrip("/").partition("/")
        orthanc = self.server.orthanc
        basic = next(iter(orthanc.users.items()))
        if route == "slow":
            time.sleep(self.server.delay_s)
        if route in ("bearer", "slow"):
            if self.headers.get("Authorization") != f"Bearer {self.server.token}":
                self._send(401)
                return
            auth: tuple[str, str] | None = basic
            headers = {}
        elif route == "forward":
            auth = None
            headers = {"Authorization": self.headers.get("Authorization", "")}
        else:
            self._send(404)
            return
        headers["Accept"] = self.headers.get("Accept", "*/*")
        with httpx.Client(base_url=orthanc.url, timeout=30, trust_env=False) as http:
            answer = http.get("/" + rest, headers=headers, auth=auth)
        self._send(answer.status_code, answer.content, answer.headers.get("content-type"))


@contextmanager
def pacs_proxy(orthanc: Orthanc, token: str, delay_s: float) -> Iterator[str]:
    """The proxy's origin, http://127.0.0.1:PORT, while the context lasts."""
    proxy = _Proxy(("127.0.0.1", 0), _Handler)
    proxy.orthanc, proxy.token, proxy.delay_s = orthanc, token, delay_s
    thread = threading.Thread(target=proxy.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{proxy.server_port}"
    finally:
        proxy.shutdown()
        proxy.server_close()
