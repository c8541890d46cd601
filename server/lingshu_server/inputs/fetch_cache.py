"""A bounded in-memory cache (entries, bytes, time to live), least recently used out first.

Used on the event loop only, so it needs no lock. Keys carry the caller's identity where the
value must not be shared between callers; the cache itself knows nothing about that.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable, Hashable
from dataclasses import dataclass


@dataclass
class _Entry:
    value: object
    size: int
    expires: float


class FetchCache:
    def __init__(
        self,
        *,
        max_bytes: int,
        max_entries: int,
        ttl_s: float,
        clock: Callable[[], float] = time.monotonic,
    ):
        self.max_bytes = max_bytes
        self.max_entries = max_entries
        self.ttl_s = ttl_s
        self._clock = clock
        self._entries: OrderedDict[Hashable, _Entry] = OrderedDict()
        self.bytes = 0

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, key: Hashable) -> object | None:
        entry = self._entries.get(key)
        if entry is None:
            return None
        if entry.expires <= self._clock():
            self._drop(key)
            return None
        self._entries.move_to_end(key)
        return entry.value

    def put(self, key: Hashable, value: object, size: int) -> None:
        """Keep `value` (`size` bytes) unless it alone is over the byte limit."""
        if key in self._entries:
            self._drop(key)
        if size > self.max_bytes or self.max_entries == 0:
            return
        self._entries[key] = _Entry(value, size, self._clock() + self.ttl_s)
        self.bytes += size
        while self.bytes > self.max_bytes or len(self._entries) > self.max_entries:
            self._drop(next(iter(self._entries)))

    def _drop(self, key: Hashable) -> None:
        self.bytes -= self._entries.pop(key).size
