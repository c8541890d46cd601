"""Reading a server's log for patient data: the random request ids are masked first, so a short
number from a DICOM header or a prompt cannot match inside a hex id by chance."""

from __future__ import annotations

import re

# The server's own request ids: 32 hex digits after `request_id` in JSON or text lines.
_REQUEST_ID = re.compile(r'(request_id"?\s*[:=]\s*"?)[0-9a-f]{32}')


def without_request_ids(log: str) -> str:
    return _REQUEST_ID.sub(r"\1<id>", log)
