"""OpenAI's cursor pages: `after` an item id, `limit` items, `order` asc or desc."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

Order = Literal["asc", "desc"]


@dataclass(frozen=True)
class Page:
    data: list[dict[str, Any]]
    has_more: bool


def page_of(items: list[dict[str, Any]], *, after: str | None, limit: int, order: Order) -> Page:
    """A page of items held in their stored (ascending) order. An unknown `after` gives an
    empty page, as a cursor past the end does."""
    ordered = items if order == "asc" else list(reversed(items))
    start = 0
    if after is not None:
        ids = [item["id"] for item in ordered]
        start = ids.index(after) + 1 if after in ids else len(ordered)
    chosen = ordered[start : start + limit]
    return Page(chosen, has_more=start + limit < len(ordered))
