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


def base_url(host: str, port: int) -> str:
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"


def ready_message(
    *,
    host: str,
    port: int,
    model: str,
    playground: bool,
    docs: bool,
    api_keys: bool,
    takes: Sequence[str] = (),
    fingerprint: str | None = None,
) -> ReadyMessage:
    """`takes`: the input kinds the model takes; `fingerprint`: its system_fingerprint."""
    listening = base_url(host, port)
    local = base_url(WILDCARD_HOSTS.get(host, host), port)
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
    fields["try"] = curl
    lines.append(f"try         {curl}")
    if api_keys:
        lines.append("            (KEY: one of the server's API keys)")
    return ReadyMessage(fields, lines)
