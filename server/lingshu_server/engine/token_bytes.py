"""A token's own bytes, for the `bytes` of logprobs.

A byte-level BPE (Qwen's) splits a character outside its vocabulary (most CJK characters, an
emoji, `é` in a small vocabulary) over tokens that each hold part of its UTF-8 encoding. Such a
token's text alone is U+FFFD, whose bytes are not the token's: the bytes come from the
vocabulary itself, so that a client joining the bytes of consecutive tokens gets the text back.
"""

from __future__ import annotations

import functools
import re
from typing import Any

# SentencePiece's byte-fallback tokens and its word marker, for tokenizers that are not
# byte-level.
_BYTE_TOKEN = re.compile(r"^<0x([0-9A-Fa-f]{2})>$")
_WORD_MARKER = "\u2581"


@functools.cache
def byte_decoder() -> dict[str, int]:
    """GPT-2's printable stand-in for each byte (what byte-level vocabularies hold), reversed."""
    printable = [
        *range(ord("!"), ord("~") + 1),
        *range(ord("\u00a1"), ord("\u00ac") + 1),
        *range(ord("\u00ae"), ord("\u00ff") + 1),
    ]
    shifted = 0
    decoder = {}
    for byte in range(256):
        if byte in printable:
            decoder[chr(byte)] = byte
        else:
            decoder[chr(256 + shifted)] = byte
            shifted += 1
    return decoder


class TokenBytes:
    """token id -> the token's bytes, from the tokenizer's vocabulary (cached)."""

    def __init__(self, tokenizer: Any):
        self._tokenizer = tokenizer
        self._added = {int(i) for i in (getattr(tokenizer, "added_tokens_decoder", None) or {})}
        self._byte_level = _is_byte_level(tokenizer)
        self._cache: dict[int, list[int]] = {}

    def __call__(self, token_id: int) -> list[int]:
        found = self._cache.get(token_id)
        if found is None:
            found = list(self._bytes(token_id))
            self._cache[token_id] = found
        return found

    def _bytes(self, token_id: int) -> bytes:
        piece = self._tokenizer.convert_ids_to_tokens(token_id)
        if not isinstance(piece, str):
            return b""
        if token_id in self._added:  # special and added tokens are held as plain text
            return piece.encode("utf-8")
        if self._byte_level:
            decoder = byte_decoder()
            if all(char in decoder for char in piece):
                return bytes(decoder[char] for char in piece)
            return piece.encode("utf-8")
        if match := _BYTE_TOKEN.match(piece):
            return bytes([int(match.group(1), 16)])
        return piece.replace(_WORD_MARKER, " ").encode("utf-8")


def _is_byte_level(tokenizer: Any) -> bool:
    """Whether the vocabulary holds GPT-2's byte stand-ins: a sample with a space, an accent and
    a CJK character comes back whole through them."""
    sample = " é肺"
    try:
        ids = tokenizer.encode(sample, add_special_tokens=False)
        pieces = tokenizer.convert_ids_to_tokens(ids)
        decoder = byte_decoder()
        joined = bytes(decoder[char] for piece in pieces for char in piece)
    except (KeyError, TypeError):
        return False
    return joined == sample.encode("utf-8")
