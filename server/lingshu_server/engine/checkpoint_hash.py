"""A checkpoint's (or a LoRA adapter's) identity as hashes of its files, each file read once.

Two hashes come from the same SHA-256 of each file:

- `checkpoint_sha256`: its config.json and weights, for the records that name the model that
  produced an answer (a report's Device, its SR's Contributing Equipment);
- `checkpoint_files_sha256`: every file that can change an answer (the weights and config, and
  the tokenizer, chat template, generation and preprocessor configs; not documents), for
  `system_fingerprint` (services/fingerprint.py).

Hashing a 7B checkpoint reads about 15 GB, so each file's SHA-256 is kept with its size and
modification time: beside the checkpoint (`.lingshu-file-digests.json`) where its folder is
writable, else in the cache folder, under a name derived from the checkpoint's path. A file is
hashed again only when its size or modification time changed: a restart reads no weights, and a
checkpoint replaced in place is hashed again.
"""

from __future__ import annotations

import fnmatch
import hashlib
import json
import logging
import os
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from lingshu_server.core.cache_dir import default_cache_dir

logger = logging.getLogger(__name__)

CACHE_NAME = ".lingshu-file-digests.json"
CACHE_VERSION = 1
# The files that decide what the model computes: its configuration and its weights.
WEIGHT_PATTERNS = ("config.json", "*.safetensors", "*.bin")
# Files that change no answer: a model card's wording.
DOCUMENT_SUFFIXES = frozenset({".md"})

# One hashing at a time: concurrent first uses (front ends starting, first reports) wait for
# the same result instead of reading the weights twice.
_lock = threading.Lock()


def checkpoint_folder(model: str) -> Path | None:
    """The folder holding `model`'s files: the directory given, or a Hugging Face id's snapshot
    in the local hub cache (None when there is none)."""
    path = Path(model)
    if path.is_dir():
        return path
    try:
        from huggingface_hub import snapshot_download

        return Path(snapshot_download(model, local_files_only=True))
    except Exception:  # not in the local cache, or not a hub id at all
        return None


def checkpoint_files(folder: Path) -> list[Path]:
    """Every file of the checkpoint (symlinks followed), but hidden ones and documents."""
    return sorted(
        item
        for item in folder.iterdir()
        if item.is_file()
        and not item.name.startswith(".")
        and item.suffix.lower() not in DOCUMENT_SUFFIXES
    )


def checkpoint_sha256(model: str, cache_dir: Path | None = None) -> str:
    """SHA-256 over the name and SHA-256 of config.json and each weights file, in name order.
    A model that is no local folder and not in the hub cache hashes its id: nothing else is
    known."""
    return _combined(model, cache_dir, weights_only=True)


def checkpoint_files_sha256(model: str, cache_dir: Path | None = None) -> str:
    """The same over every file of the checkpoint (checkpoint_files)."""
    return _combined(model, cache_dir, weights_only=False)


def folder_sha256(folder: Path, cache_dir: Path | None = None) -> str:
    """checkpoint_files_sha256 of a folder (a LoRA adapter's)."""
    return _combine(file_digests(folder, cache_dir))


def _combined(model: str, cache_dir: Path | None, *, weights_only: bool) -> str:
    folder = checkpoint_folder(model)
    if folder is None:
        return hashlib.sha256(f"model-id:{model}".encode()).hexdigest()
    digests = file_digests(folder, cache_dir)
    if weights_only:
        digests = {
            name: digest
            for name, digest in digests.items()
            if any(fnmatch.fnmatch(name, pattern) for pattern in WEIGHT_PATTERNS)
        }
    return _combine(digests)


def _combine(digests: dict[str, str]) -> str:
    combined = hashlib.sha256()
    for name in sorted(digests):
        combined.update(f"{name}\0{digests[name]}\n".encode())
    return combined.hexdigest()


def file_digests(folder: Path, cache_dir: Path | None = None) -> dict[str, str]:
    """Each checkpoint file's name -> its SHA-256, read from the kept digests where the file's
    size and modification time are unchanged."""
    folder = folder.resolve()
    places = (folder / CACHE_NAME, _cache_file(folder, cache_dir or default_cache_dir()))
    with _lock:
        known = _read(places)
        started = time.monotonic()
        entries: dict[str, dict[str, Any]] = {}
        hashed = 0
        for file in checkpoint_files(folder):
            stat = file.stat()
            entry: Any = known.get(file.name)
            unchanged = (
                isinstance(entry, dict)
                and isinstance(entry.get("sha256"), str)
                and (entry.get("size"), entry.get("mtime_ns")) == (stat.st_size, stat.st_mtime_ns)
            )
            if not unchanged:
                entry = {"size": stat.st_size, "mtime_ns": stat.st_mtime_ns}
                entry["sha256"] = _sha256(file)
                hashed += stat.st_size
            entries[file.name] = entry
        if entries != known:
            _write(places, entries)
    if hashed:
        seconds = round(time.monotonic() - started, 2)
        fields = {"folder": str(folder), "bytes": hashed, "seconds": seconds}
        logger.info("checkpoint files hashed", extra={"fields": fields})
    return {name: entry["sha256"] for name, entry in entries.items()}


def _sha256(file: Path) -> str:
    with file.open("rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


def _cache_file(folder: Path, cache_dir: Path) -> Path:
    key = hashlib.sha256(str(folder).encode()).hexdigest()[:32]
    return cache_dir / "checkpoint-digests" / f"{key}.json"


def _read(places: tuple[Path, ...]) -> dict[str, Any]:
    """The first readable record of this folder's digests."""
    for place in places:
        try:
            data = json.loads(place.read_text())
        except (OSError, ValueError):
            continue
        if isinstance(data, dict) and data.get("version") == CACHE_VERSION:
            files = data.get("files")
            if isinstance(files, dict):
                return files
    return {}


def _write(places: tuple[Path, ...], entries: dict[str, dict[str, Any]]) -> None:
    """Beside the checkpoint if its folder takes it, else in the cache folder; written whole
    and renamed into place, so concurrent starts never read half a record."""
    text = json.dumps({"version": CACHE_VERSION, "files": entries}, indent=1, sort_keys=True)
    for place in places:
        try:
            place.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(prefix=place.name, dir=place.parent)
        except OSError:
            continue
        try:
            with os.fdopen(fd, "w") as f:
                f.write(text)
            os.chmod(tmp, 0o644)  # readable by whoever else serves this checkpoint
            os.replace(tmp, place)
            return
        except OSError:
            Path(tmp).unlink(missing_ok=True)
    logger.warning("checkpoint digests not kept: no writable place")
