"""The checkpoint's identity as a hash of its files (config and weights), for the records that
name the model that produced an answer (a report's Device, its SR's Contributing Equipment).

Hashing a 7B checkpoint reads about 15 GB, so the result is cached per process and keyed by
the files' names, sizes and modification times: a checkpoint replaced in place is hashed again.
"""

from __future__ import annotations

import hashlib
import threading
from pathlib import Path

# The files that decide what the model computes: its configuration and its weights.
HASHED_PATTERNS = ("config.json", "*.safetensors", "*.bin")
_CHUNK = 4 * 1024 * 1024

_lock = threading.Lock()
_cache: dict[tuple[object, ...], str] = {}


def checkpoint_files(model_dir: Path) -> list[Path]:
    found = {path for pattern in HASHED_PATTERNS for path in model_dir.glob(pattern)}
    return sorted(path for path in found if path.is_file())


def _file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as file:
        while chunk := file.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def checkpoint_sha256(model: str) -> str:
    """SHA-256 over each hashed file's name and SHA-256, in name order. A model that is not a
    local directory (a hub id) hashes to the SHA-256 of its name: nothing else is known."""
    model_dir = Path(model)
    if not model_dir.is_dir():
        return hashlib.sha256(f"model-id:{model}".encode()).hexdigest()
    files = checkpoint_files(model_dir)
    key = (
        str(model_dir.resolve()),
        *((p.name, p.stat().st_size, p.stat().st_mtime_ns) for p in files),
    )
    with _lock:  # one hashing at a time: concurrent first reports wait for the same result
        cached = _cache.get(key)
        if cached is None:
            total = hashlib.sha256()
            for path in files:
                total.update(f"{path.name}\0{_file_sha256(path)}\n".encode())
            cached = _cache[key] = total.hexdigest()
    return cached
