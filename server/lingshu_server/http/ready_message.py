"""The one message a person looks for once the server answers: where it listens, the
playground and docs pages, and a request to try.

The curl names the Authorization header when keys are configured, never a key."""

from __future__ import annotations

import json
import shlex
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

# Listening on every address: the examples use the loopback one, reachable from this machine.
WILDCARD_HOSTS = {"": "127.0.0.1", "0.0.0.0": "127.0.0.1", "::": "::1"}


@dataclass(frozen=True)
class ReadyMessage:
    fields: dict[str, Any]  # the JSON record's fields
    text_lines: list[str]  # what a text log shows instead: a short block


def base_url(host: str, port: int, scheme: str = "http") -> str:
    return f"{scheme}://[{host}]:{port}" if ":" in host else f"{scheme}://{host}:{port}"


def ready_message(
    *,
    host: str,
    port: int,
    model: str,
    playground: bool,
    docs: bool,
    api_keys: bool,
    tls: bool = False,
    stored_responses: str | None = None,
    takes: Sequence[str] = (),
    fingerprint: str | None = None,
) -> ReadyMessage:
    """`stored_responses`: where responses are stored by default (the database, described
    without credentials), or None when they are not. `takes`: the input kinds the model takes;
    `fingerprint`: its system_fingerprint."""
    scheme = "https" if tls else "http"
    listening = base_url(host, port, scheme)
    local = base_url(WILDCARD_HOSTS.get(host, host), port, scheme)
    body = {"model": model, "messages": [{"role": "user", "content": "Hello"}], "max_tokens": 32}
    curl = " ".join(
        [
            f"curl {local}/v1/chat/completions",
            '-H "Content-Type: application/json"',
            *(['-H "Authorization: Bearer $KEY"'] if api_keys else []),
            f"-d {shlex.quote(json.dumps(body))}",
        ]
    )
    fields: dict[str, Any] = {"served_model": model, "url": listening}
    lines = [f"ready: {model} on {listening}"]
    if takes:
        fields["input_modalities"] = list(takes)
        lines.append(f"takes       {', '.join(takes)}")
    if fingerprint:
        fields["system_fingerprint"] = fingerprint
        lines.append(f"fingerprint {fingerprint}")
    if playground:
        fields["playground_url"] = f"{local}/playground"
        lines.append(f"playground  {local}/playground")
    if docs:
        fields["docs_url"] = f"{local}/docs"
        lines.append(f"API docs    {local}/docs")
    if stored_responses:
        fields["stored_responses"] = stored_responses
        lines.append(f"storing     responses by default, in {stored_responses}")
    fields["try"] = curl
    lines.append(f"try         {curl}")
    if api_keys:
        lines.append("            (KEY: one of the server's API keys)")
    return ReadyMessage(fields, lines)
