"""A DICOM series as the model should see it: its image instances in anatomical order, and
N of them evenly spaced. Works from WADO-RS series metadata (DICOM JSON), before any pixels
are fetched."""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

UID_PATTERN = r"[0-9]{1,64}(?:\.[0-9]{1,64}){0,63}"
# DICOM JSON keys (group+element, hex)
_SOP_INSTANCE_UID = "00080018"
_INSTANCE_NUMBER = "00200013"
_IMAGE_POSITION = "00200032"
_IMAGE_ORIENTATION = "00200037"
_ROWS = "00280010"


@dataclass(frozen=True, kw_only=True)
class SeriesSlice:
    """What ordering and choosing slices needs from one instance's metadata."""

    sop_uid: str
    instance_number: int | None
    position: tuple[float, ...] | None  # ImagePositionPatient (x, y, z)
    orientation: tuple[float, ...] | None  # ImageOrientationPatient (row, column cosines)
    has_pixels: bool


def _values(item: dict[str, Any], tag: str) -> list[Any]:
    element = item.get(tag)
    values = element.get("Value") if isinstance(element, dict) else None
    return values if isinstance(values, list) else []


def _floats(item: dict[str, Any], tag: str, count: int) -> tuple[float, ...] | None:
    try:
        values = tuple(float(v) for v in _values(item, tag))
    except (TypeError, ValueError):
        return None
    return values if len(values) == count else None


def _instance_number(item: dict[str, Any]) -> int | None:
    number = next(iter(_values(item, _INSTANCE_NUMBER)), None)
    try:
        return int(number) if number is not None else None
    except (TypeError, ValueError):
        return None


def parse_series_metadata(body: bytes) -> list[SeriesSlice]:
    """WADO-RS series metadata -> one SeriesSlice per instance. ValueError if not DICOM JSON."""
    items = json.loads(body)
    if not isinstance(items, list):
        raise ValueError("series metadata is not a JSON array")
    slices = []
    for item in items:
        if not isinstance(item, dict):
            raise ValueError("series metadata entry is not an object")
        uid = next(iter(_values(item, _SOP_INSTANCE_UID)), None)
        if not isinstance(uid, str) or not re.fullmatch(UID_PATTERN, uid):
            continue
        slices.append(
            SeriesSlice(
                sop_uid=uid,
                instance_number=_instance_number(item),
                position=_floats(item, _IMAGE_POSITION, 3),
                orientation=_floats(item, _IMAGE_ORIENTATION, 6),
                has_pixels=bool(_values(item, _ROWS)),  # Rows: an image
            )
        )
    return slices


def _slice_normal(orientation: tuple[float, ...]) -> tuple[float, float, float]:
    """The cross product of the row and column direction cosines."""
    (r0, r1, r2), (c0, c1, c2) = orientation[:3], orientation[3:]
    return (r1 * c2 - r2 * c1, r2 * c0 - r0 * c2, r0 * c1 - r1 * c0)


def anatomical_order(slices: Sequence[SeriesSlice]) -> list[SeriesSlice]:
    """Along the slice normal when every slice has a position and orientation, else by
    InstanceNumber (slices without one last); the SOP Instance UID breaks ties."""
    placed = [(s.position, s) for s in slices if s.position and s.orientation]
    orientation = slices[0].orientation if slices else None
    if orientation and len(placed) == len(slices):
        normal = _slice_normal(orientation)

        def along_normal(item: tuple[tuple[float, ...], SeriesSlice]) -> tuple[float, str]:
            position, s = item
            distance = sum(p * n for p, n in zip(position, normal, strict=True))
            return distance, s.sop_uid

        return [s for _, s in sorted(placed, key=along_normal)]
    return sorted(
        slices, key=lambda s: (s.instance_number is None, s.instance_number or 0, s.sop_uid)
    )


def evenly_spaced(items: Sequence[SeriesSlice], count: int) -> list[SeriesSlice]:
    """`count` items from the middles of `count` equal runs; 1 is the middle item."""
    count = min(count, len(items))
    return [items[(2 * i + 1) * len(items) // (2 * count)] for i in range(count)]
