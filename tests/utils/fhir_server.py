"""A small FHIR R4 server on loopback, for what reports use of one: the transaction interaction
(`POST [base]` with a `transaction` Bundle) and reads (`GET [base]/Type/id`).

No FHIR server installs here (HAPI is Java), so this stands in, behaving as FHIR servers do for
that much: the Bundle is parsed and validated with fhir.resources' R4B models; each entry is
created with a server-assigned id (or, with `ifNoneExist`, the existing match is reused);
references to the entries' `urn:uuid:` full URLs are rewritten to the new `Type/id`; the
answer is a `transaction-response` Bundle with each entry's status and location. Every refusal
is an OperationOutcome with the status a FHIR server gives: 400 unparseable or invalid, 401 no
or wrong credentials, 403 a user who may not write, 415 not FHIR JSON, 422 refused by policy.

Routes (one server, several gateways, like tests/utils/pacs_proxy.py):
  /basic/fhir, /forward/fhir   HTTP basic, one of `users` (`readers` may read but not write)
  /bearer/fhir                 `Authorization: Bearer <token>`
  /refusing/fhir               no auth; refuses every transaction by policy (422)
"""

from __future__ import annotations

import base64
import datetime as dt
import json
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from fhir.resources.R4B.bundle import Bundle
from pydantic import ValidationError

FHIR_JSON = "application/fhir+json"
BASIC_ROUTES = ("basic", "forward")
REFUSAL = "transactions are not accepted here: reports go through the RIS (policy)"


@dataclass
class FhirStore:
    """What the server holds: resources by (type, id), and each transaction it took."""

    resources: dict[tuple[str, str], dict[str, Any]] = field(default_factory=dict)
    transactions: list[dict[str, Any]] = field(default_factory=list)  # route, user, bundle
    lock: threading.Lock = field(default_factory=threading.Lock)

    def read(self, reference: str) -> dict[str, Any]:
        """A resource by `Type/id` (a location's `/_history/n` is dropped)."""
        kind, ident = reference.split("/")[:2]
        with self.lock:
            return self.resources[(kind, ident)]

    def search_identifier(self, kind: str, query: str) -> str | None:
        """The id of a `kind` whose identifier matches `identifier=system|value`."""
        name, _, token = query.partition("=")
        system, _, value = token.rpartition("|")
        if name != "identifier":
            return None
        for (found_kind, ident), resource in self.resources.items():
            if found_kind == kind and any(
                i.get("system") == system and i.get("value") == value
                for i in resource.get("identifier", [])
            ):
                return ident
        return None


def outcome(code: str, diagnostics: str, severity: str = "error") -> dict[str, Any]:
    return {
        "resourceType": "OperationOutcome",
        "issue": [{"severity": severity, "code": code, "diagnostics": diagnostics}],
    }


def _rewrite_references(value: Any, new_urls: dict[str, str]) -> Any:
    if isinstance(value, dict):
        return {
            key: new_urls.get(item, item)
            if key == "reference" and isinstance(item, str)
            else _rewrite_references(item, new_urls)
            for key, item in value.items()
        }
    if isinstance(value, list):
        return [_rewrite_references(item, new_urls) for item in value]
    return value


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    store: FhirStore
    users: dict[str, str]
    readers: frozenset[str]
    token: str


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _Server

    def log_message(self, format, *args) -> None:  # noqa: A002, ANN001 - keep pytest quiet
        pass

    def _send(self, status: int, body: dict[str, Any]) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", FHIR_JSON)
        self.send_header("Content-Length", str(len(data)))
        if status == HTTPStatus.UNAUTHORIZED:
            self.send_header("WWW-Authenticate", 'Basic realm="fhir"')
        self.end_headers()
        self.wfile.write(data)

    def _route(self) -> tuple[str, str] | None:
        """(gateway, the path under the FHIR base) of a request under a known base."""
        gateway, _, rest = self.path.lstrip("/").partition("/")
        if rest != "fhir" and not rest.startswith("fhir/"):
            return None
        return gateway, rest.removeprefix("fhir").strip("/")

    def _user(self, gateway: str) -> str | None:
        """Who is signed in; None after answering 401/404 for them."""
        sent = self.headers.get("Authorization", "")
        if gateway == "refusing":
            return ""
        if gateway == "bearer":
            if sent == f"Bearer {self.server.token}":
                return "bearer"
        elif gateway in BASIC_ROUTES:
            scheme, _, encoded = sent.partition(" ")
            try:
                user, _, password = base64.b64decode(encoded).decode().partition(":")
            except ValueError:
                user, password = "", None
            if scheme == "Basic" and self.server.users.get(user) == password:
                return user
        else:
            self._send(HTTPStatus.NOT_FOUND, outcome("not-found", "no such FHIR base"))
            return None
        self._send(HTTPStatus.UNAUTHORIZED, outcome("login", "authentication required"))
        return None

    def do_GET(self) -> None:
        route = self._route()
        if route is None:
            self._send(HTTPStatus.NOT_FOUND, outcome("not-found", "no such FHIR base"))
            return
        if self._user(route[0]) is None:
            return
        try:
            self._send(HTTPStatus.OK, self.server.store.read(route[1]))
        except (KeyError, ValueError):
            self._send(HTTPStatus.NOT_FOUND, outcome("not-found", "no such resource"))

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
        route = self._route()
        if route is None or route[1]:
            self._send(HTTPStatus.NOT_FOUND, outcome("not-supported", "POST a Bundle to the base"))
            return
        gateway, _ = route
        user = self._user(gateway)
        if user is None:
            return
        if user in self.server.readers:
            self._send(HTTPStatus.FORBIDDEN, outcome("forbidden", f"{user} may not write"))
            return
        if self.headers.get("Content-Type", "").split(";")[0].strip() != FHIR_JSON:
            self._send(
                HTTPStatus.UNSUPPORTED_MEDIA_TYPE, outcome("not-supported", f"send {FHIR_JSON}")
            )
            return
        if gateway == "refusing":
            self._send(HTTPStatus.UNPROCESSABLE_ENTITY, outcome("business-rule", REFUSAL))
            return
        try:
            bundle = json.loads(body)
            Bundle.model_validate(bundle)
        except (ValueError, ValidationError) as exc:
            self._send(HTTPStatus.BAD_REQUEST, outcome("structure", str(exc)[:300]))
            return
        if bundle.get("type") != "transaction":
            self._send(HTTPStatus.BAD_REQUEST, outcome("invalid", "not a transaction Bundle"))
            return
        self._send(HTTPStatus.OK, self._transaction(gateway, user, bundle))

    def _transaction(self, gateway: str, user: str, bundle: dict[str, Any]) -> dict[str, Any]:
        store = self.server.store
        now = dt.datetime.now(dt.UTC).isoformat(timespec="seconds")
        responses, created, new_urls = [], [], {}
        with store.lock:
            for entry in bundle.get("entry", []):
                resource, request = entry["resource"], entry["request"]
                kind = request["url"]
                existing = (
                    store.search_identifier(kind, request["ifNoneExist"])
                    if "ifNoneExist" in request
                    else None
                )
                ident = existing or str(len(store.resources) + len(created) + 1)
                new_urls[entry["fullUrl"]] = f"{kind}/{ident}"
                status = "200 OK" if existing else "201 Created"
                responses.append(
                    {
                        "response": {
                            "status": status,
                            "location": f"{kind}/{ident}/_history/1",
                            "etag": 'W/"1"',
                            "lastModified": now,
                        }
                    }
                )
                if not existing:
                    created.append((kind, ident, resource))
            for kind, ident, resource in created:
                stored = _rewrite_references(resource, new_urls)
                stored |= {"id": ident, "meta": {**resource.get("meta", {}), "versionId": "1"}}
                store.resources[(kind, ident)] = stored
            store.transactions.append({"route": gateway, "user": user, "bundle": bundle})
        return {"resourceType": "Bundle", "type": "transaction-response", "entry": responses}


@dataclass
class FhirServer:
    origin: str
    store: FhirStore

    def base(self, gateway: str) -> str:
        return f"{self.origin}/{gateway}/fhir"


@contextmanager
def fhir_server(users: dict[str, str], readers: set[str], token: str) -> Iterator[FhirServer]:
    """The stand-in FHIR server while the context lasts."""
    server = _Server(("127.0.0.1", 0), _Handler)
    server.store, server.users, server.readers, server.token = (
        FhirStore(),
        users,
        frozenset(readers),
        token,
    )
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield FhirServer(f"http://127.0.0.1:{server.server_port}", server.store)
    finally:
        server.shutdown()
        server.server_close()
