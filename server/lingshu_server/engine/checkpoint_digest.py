"""A checkpoint's (or a LoRA adapter's) identity: one SHA-256 over its files, computed once.

Hashing a 16 GB checkpoint takes a while, so each file's digest is kept with its size and
modification time: beside the checkpoint (`.lingshu-file-digests.json`) where its folder is
writable, else in the cache folder, under a name derived from the checkpoint's path. A file is
hashed again only when its size or modification time changed, so a restart reads no weights.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import tempfile
import time
from pathlib import Path
from typing import Any

logger = logging.getLogger(__name__)

CACHE_NAME = ".lingshu-file-digests.json"
CACHE_VERSION = 1
# Files that change no answer: a model card or a licence's wording.
DOCUMENT_SUFFIXES = frozenset({".md"})
FileDigests = dict[str, dict[str, Any]]  # name -> {"size", "mtime_ns", "sha256"}


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
    """The files that make the checkpoint: every file in the folder (symlinks followed), but
    hidden ones and documents."""
    return sorted(
        item
        for item in folder.iterdir()
        if item.is_file()
        and not item.name.startswith(".")
        and item.suffix.lower() not in DOCUMENT_SUFFIXES
    )


def checkpoint_digest(model: str, cache_dir: Path) -> str:
    """SHA-256 (hex) over the names and contents of the checkpoint's files; for a model that is
    no local folder and not in the hub cache, over its id."""
    folder = checkpoint_folder(model)
    if folder is None:
        return hashlib.sha256(f"id:{model}".encode()).hexdigest()
    return folder_digest(folder, cache_dir)


def folder_digest(folder: Path, cache_dir: Path) -> str:
    folder = folder.resolve()
    places = (folder / CACHE_NAME, _cache_file(folder, cache_dir))
    known = _read(places)
    started = time.monotonic()
    digests: FileDigests = {}
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
            entry = {"size": stat.st_size, "mtime_ns": stat.st_mtime_ns, "sha256": _sha256(file)}
            hashed += stat.st_size
        digests[file.name] = entry
    if digests != known:
        _write(places, digests)
    if hashed:
        logger.info(
            "checkpoint files hashed",
            extra={
                "fields": {
                    "folder": str(folder),
                    "bytes": hashed,
                    "seconds": round(time.monotonic() - started, 2),
                }
            },
        )
    combined = hashlib.sha256()
    for name in sorted(digests):
        combined.update(f"{name}\0{digests[name]['sha256']}\n".encode())
    return combined.hexdigest()


def _sha256(file: Path) -> str:
    with file.open("rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


def _cache_file(folder: Path, cache_dir: Path) -> Path:
    key = hashlib.sha256(str(folder).encode()).hexdigest()[:32]
    return cache_dir / "checkpoint-digests" / f"{key}.json"


def _read(places: tuple[Path, ...]) -> FileDigests:
    """The first readable cache of this folder's digests."""
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


def _write(places: tuple[Path, ...], digests: FileDigests) -> None:
    """Beside the checkpoint if its folder takes it, else in the cache folder; written whole
    and renamed into place, so concurrent starts never read half a file."""
    text = json.dumps({"version": CACHE_VERSION, "files": digests}, indent=1, sort_keys=True)
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
    logger.warning("checkpoint digests not cached: no writable place")
