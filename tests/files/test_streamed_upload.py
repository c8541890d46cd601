"""An upload larger than a few MiB streams through the server: it is checked and written to the
database as it arrives, and read back the same way. Shown with the memory Python allocates while
it happens (the server runs in this process): the peak stays a small part of the file's size.
The upload is also over --max-request-bytes, which the files route replaces with its own cap."""

from __future__ import annotations

import hashlib
import json
import tracemalloc
from collections.abc import Iterator

from tests.files.batch_files import chat_line, multipart
from tests.files.conftest import MAX_REQUEST_BYTES

FILE_BYTES = 12 * 1024 * 1024
LINE_TEXT = "Describe the findings of this chest radiograph. " * 40  # about 2 KB a line


def batch_file(size: int) -> Iterator[bytes]:
    """A valid batch file of about `size` bytes, made as it is sent (the client holds a line)."""
    sent = number = 0
    while sent < size:
        number += 1
        line = (json.dumps(chat_line(f"study-{number}", LINE_TEXT)) + "\n").encode()
        sent += len(line)
        yield line


def test_a_large_upload_streams_through_in_a_fraction_of_its_size(alice):
    headers, form = multipart(b"<file>")
    head, tail = form.split(b"<file>")
    digest = hashlib.sha256()

    def body() -> Iterator[bytes]:
        yield head
        for line in batch_file(FILE_BYTES):
            digest.update(line)
            yield line
        yield tail

    line = json.dumps(chat_line("warm-up")).encode()
    warm_up = alice.post("/v1/files", headers=headers, content=head + line + tail)
    alice.get(f"/v1/files/{warm_up.json()['id']}/content")  # modules loaded, caches filled
    alice.delete(f"/v1/files/{warm_up.json()['id']}")
    tracemalloc.start()
    try:
        created = alice.post("/v1/files", headers=headers, content=body())
        _, upload_peak = tracemalloc.get_traced_memory()
        tracemalloc.reset_peak()
        read_back = hashlib.sha256()
        with alice.stream("GET", f"/v1/files/{created.json()['id']}/content") as response:
            for data in response.iter_bytes():
                read_back.update(data)
        _, download_peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert created.status_code == 200, created.text
    size = created.json()["bytes"]
    assert size >= FILE_BYTES > MAX_REQUEST_BYTES
    assert read_back.hexdigest() == digest.hexdigest()
    # about 2 MB each: a MiB being written or read, and the network's buffers (other threads of
    # this process count too, hence the margin)
    assert upload_peak < size / 3, f"upload peak {upload_peak} bytes for a {size}-byte file"
    assert download_peak < size / 3, f"download peak {download_peak} bytes for {size} bytes"
    alice.delete(f"/v1/files/{created.json()['id']}")
