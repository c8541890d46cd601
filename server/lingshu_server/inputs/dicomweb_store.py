"""STOW-RS: one DICOM instance stored into a configured PACS (`POST {base}/studies`), signed in
as the PACS's reads are (its credentials file, or the caller's forwarded credential).

A PACS answers 200 when everything was stored, 202 when some was not, 409 when nothing was,
or refuses the request (401/403, 4xx). Anything but our instance listed as stored is a refusal,
told with the PACS's own reason: the Failure Reason it gave for the instance, else its HTTP
status. An instance listed as stored is then searched for (QIDO-RS): a PACS may acknowledge
what an import filter drops, and only an instance found is reported stored. Messages name the
PACS by host:port, never a UID.
"""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass
from http import HTTPStatus
from typing import Any

from lingshu_server.core.errors import PacsStoreRefusedError, PacsUnavailableError
from lingshu_server.inputs.pacs_client import DicomWebRef, Pacs, PacsAnswer, PacsClient

STORE_ACCEPT = "application/dicom+json"
FAILED_SOP_SEQUENCE = "00081198"
REFERENCED_SOP_SEQUENCE = "00081199"
REFERENCED_SOP_INSTANCE_UID = "00081155"
SOP_INSTANCE_UID = "00080018"
FAILURE_REASON = "00081197"
# PS3.4 and PS3.18's Failure Reason values a PACS gives for a stored instance
FAILURE_REASONS = {
    0x0110: "Processing failure",
    0x0112: "No such object instance",
    0x0122: "SOP class not supported",
    0x0124: "Not authorized",
    0xA700: "Refused: out of resources",
    0xA770: "Refused: out of resources (SOP instance)",
    0xA900: "Data set does not match SOP class",
    0xC000: "Cannot understand",
    0xC122: "Transfer syntax not supported",
}


@dataclass(frozen=True)
class StoredInstance:
    pacs: str  # host:port
    url: str  # its WADO-RS URL


def multipart_related(data: bytes) -> tuple[bytes, str]:
    """A STOW-RS body of one application/dicom part, and its Content-Type."""
    boundary = uuid.uuid4().hex
    body = b"".join(
        (
            f"--{boundary}\r\nContent-Type: application/dicom\r\n\r\n".encode(),
            data,
            f"\r\n--{boundary}--\r\n".encode(),
        )
    )
    return body, f'multipart/related; type="application/dicom"; boundary={boundary}'


def _items(answer: dict[str, Any], tag: str) -> list[dict[str, Any]]:
    element = answer.get(tag)
    values = element.get("Value") if isinstance(element, dict) else None
    return [item for item in values or [] if isinstance(item, dict)]


def _uid(item: dict[str, Any]) -> str | None:
    values = (item.get(REFERENCED_SOP_INSTANCE_UID) or {}).get("Value") or [None]
    return values[0] if isinstance(values[0], str) else None


def _reason(item: dict[str, Any]) -> str:
    values = (item.get(FAILURE_REASON) or {}).get("Value") or [None]
    code = values[0]
    if not isinstance(code, int):
        return "no failure reason given"
    meaning = FAILURE_REASONS.get(code)
    return f"failure reason 0x{code:04X}" + (f" ({meaning})" if meaning else "")


def store_outcome(answer: PacsAnswer, sop_uid: str) -> str | None:
    """None when the PACS stored the instance, else its reason for not storing it."""
    status = answer.status
    try:
        body = json.loads(answer.body) if answer.body.strip() else {}
    except ValueError:
        body = {}
    body = body if isinstance(body, dict) else {}
    failed = [item for item in _items(body, FAILED_SOP_SEQUENCE) if _uid(item) in (sop_uid, None)]
    if failed:
        return _reason(failed[0])
    if status in (HTTPStatus.OK, HTTPStatus.ACCEPTED):
        stored = _items(body, REFERENCED_SOP_SEQUENCE)
        if not body or any(_uid(item) == sop_uid for item in stored):
            return None
        return "the instance is not among those it stored"
    try:
        return f"HTTP {status} {HTTPStatus(status).phrase}"
    except ValueError:
        return f"HTTP {status}"


def _found_uids(body: bytes) -> set[str]:
    try:
        matches = json.loads(body) if body.strip() else []
    except ValueError:
        return set()
    if not isinstance(matches, list):
        return set()
    return {
        uid
        for match in matches
        if isinstance(match, dict)
        for uid in (match.get(SOP_INSTANCE_UID) or {}).get("Value") or []
        if isinstance(uid, str)
    }


async def _not_held(client: PacsClient, ref: DicomWebRef) -> str | None:
    """None when the PACS holds the instance it said it stored (a QIDO-RS search for its SOP
    Instance UID finds it), else why it cannot be said to be stored: a PACS may acknowledge
    an instance that an import filter then drops."""
    pacs = ref.pacs
    url = str(
        pacs.base.copy_with(
            path=f"{pacs.prefix}/studies/{ref.study}/series/{ref.series}/instances",
            params={"SOPInstanceUID": ref.instance or ""},
        )
    )
    answer = await client.send(pacs, "GET", url, "query", {"Accept": STORE_ACCEPT})
    if answer.status in (HTTPStatus.UNAUTHORIZED, HTTPStatus.FORBIDDEN):
        return f"refused to show it (HTTP {answer.status}), so it cannot be confirmed"
    if answer.status not in (HTTPStatus.OK, HTTPStatus.NO_CONTENT, HTTPStatus.NOT_FOUND):
        return f"answered HTTP {answer.status} to a search for it"
    if answer.status == HTTPStatus.OK and ref.instance in _found_uids(answer.body):
        return None
    return "does not hold it (an import filter may have dropped it)"


async def store_instance(client: PacsClient, ref: DicomWebRef, data: bytes) -> StoredInstance:
    """Store `data` (the instance `ref` names) into `ref.pacs`."""
    pacs: Pacs = ref.pacs
    body, content_type = multipart_related(data)
    url = str(pacs.base.copy_with(path=f"{pacs.prefix}/studies"))
    headers = {"Accept": STORE_ACCEPT, "Content-Type": content_type}
    answer = await client.send(pacs, "POST", url, "store", headers, content=body)
    if answer.status == HTTPStatus.TOO_MANY_REQUESTS or answer.status >= 500:
        client.metrics.errors.labels("unavailable").inc()
        raise PacsUnavailableError(
            f"the PACS at {pacs.label} answered HTTP {answer.status} to storing the report"
        )
    assert ref.instance is not None
    reason = store_outcome(answer, ref.instance)
    if reason is None:
        missing = await _not_held(client, ref)
        if missing is None:
            return StoredInstance(pacs=pacs.label, url=ref.url)
        client.metrics.errors.labels("store_refused").inc()
        raise PacsStoreRefusedError(
            f"the PACS at {pacs.label} acknowledged the report but {missing}"
        )
    client.metrics.errors.labels("store_refused").inc()
    whose = ""
    if answer.status in (HTTPStatus.UNAUTHORIZED, HTTPStatus.FORBIDDEN):
        whose = f" with {pacs.auth.credentials_used('PACS')}"
    raise PacsStoreRefusedError(
        f"the PACS at {pacs.label} refused to store the report{whose}: {reason}"
    )
