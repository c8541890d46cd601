"""The Open Responses specification, as llm-comply ships it, as a check of what we send: a
response object, or a stream event against the schema of its type."""

from __future__ import annotations

import functools
import warnings
from pathlib import Path
from typing import Any


@functools.cache
def _spec() -> Any:
    import llm_comply
    from llm_comply.schema import SpecLoader

    return SpecLoader(str(Path(llm_comply.__file__).parent / "specs" / "openresponses.json"))


def event_types() -> set[str]:
    """Every stream event type the specification defines a schema for."""
    from llm_comply.schema import SSE_EVENT_TO_SCHEMA

    return set(SSE_EVENT_TO_SCHEMA)


def _checked(validate: Any, *args: Any) -> list[str]:
    with warnings.catch_warnings():  # llm-comply resolves $refs with jsonschema's RefResolver
        warnings.simplefilter("ignore", DeprecationWarning)
        return validate(*args)


def event_errors(event: dict[str, Any]) -> list[str]:
    """What the specification finds wrong with one stream event (none: it fits)."""
    return _checked(_spec().validate_sse_event, event["type"], event)


def response_errors(response: dict[str, Any]) -> list[str]:
    """What the specification finds wrong with a response object."""
    return _checked(_spec().validate, response, "ResponseResource")
