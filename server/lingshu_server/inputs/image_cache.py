"""Recent images, decoded and resized, by the name of their pixels.

A chat client sends the whole conversation with every question, so a follow-up about an image
carries that image again. Its encoded bytes are hashed anyway (the name the engine's caches
know it by, `media.pixels_id`); when the same bytes prepared the same way were decoded
recently, the decoded image is reused and nothing is decoded or resized again. The engine
then finds the image in its own processed-input cache by that name, so a follow-up costs no
image work at all.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from typing import Any

from PIL import Image

# (the image, what decoding it found out: a DICOM file's frame and window, or None)
Entry = tuple[Image.Image, Any]


class PreparedImageCache:
    """A thread-safe LRU of RGB images, bounded by their pixel bytes. The images are shared:
    nothing downstream changes an image it is handed (vLLM's processor copies into tensors)."""

    def __init__(self, max_bytes: int):
        self.max_bytes = max_bytes
        self._images: OrderedDict[str, Entry] = OrderedDict()
        self._bytes = 0
        self._lock = threading.Lock()

    @staticmethod
    def _size(image: Image.Image) -> int:
        return image.width * image.height * len(image.getbands())

    def get(self, key: str) -> Entry | None:
        with self._lock:
            entry = self._images.get(key)
            if entry is not None:
                self._images.move_to_end(key)
            return entry

    def put(self, key: str, image: Image.Image, details: Any = None) -> None:
        size = self._size(image)
        if size > self.max_bytes:
            return
        with self._lock:
            if key in self._images:
                self._images.move_to_end(key)
                return
            self._images[key] = (image, details)
            self._bytes += size
            while self._bytes > self.max_bytes:
                _, (evicted, _) = self._images.popitem(last=False)
                self._bytes -= self._size(evicted)

    def __len__(self) -> int:
        return len(self._images)

    @property
    def bytes(self) -> int:
        return self._bytes
