"""The JSON schemas the structured-output battery (and the tool-call battery) run: every keyword
the grammar enforces, each in a schema of its own or in combination."""

from __future__ import annotations

NAME = {"type": "string", "minLength": 1, "maxLength": 12}

SCHEMAS: dict[str, dict] = {
    "string-maxLength": {"type": "string", "maxLength": 20},
    "string-minLength": {"type": "string", "minLength": 3, "maxLength": 8},
    "string-pattern": {"type": "string", "pattern": "^[A-Z]{2}-[0-9]{3}$"},
    "string-enum": {"type": "string", "enum": ["normal", "abnormal", "indeterminate"]},
    "format-date": {"type": "string", "format": "date"},
    "format-date-time": {"type": "string", "format": "date-time"},
    "format-uuid": {"type": "string", "format": "uuid"},
    "format-email": {"type": "string", "format": "email"},
    "format-ipv4": {"type": "string", "format": "ipv4"},
    "format-time": {"type": "string", "format": "time"},
    "format-hostname": {"type": "string", "format": "hostname"},
    "integer-bounds": {"type": "integer", "minimum": -5, "maximum": 120},
    "integer-exclusive": {"type": "integer", "exclusiveMinimum": 0, "exclusiveMaximum": 10},
    "number-bounds": {"type": "number", "minimum": 0.5, "maximum": 99.5},
    "boolean": {"type": "boolean"},
    "const": {"const": "chest-xray"},
    "nullable-anyOf": {
        "anyOf": [{"type": "integer", "minimum": 0, "maximum": 9}, {"type": "null"}]
    },
    "type-list": {"type": ["integer", "null"], "minimum": 0, "maximum": 50},
    "object-closed": {
        "type": "object",
        "properties": {"finding": NAME, "urgent": {"type": "boolean"}},
        "required": ["finding", "urgent"],
        "additionalProperties": False,
    },
    "object-optional-fields": {
        "type": "object",
        "properties": {
            "finding": NAME,
            "laterality": {"type": "string", "enum": ["left", "right", "both"]},
            "size_mm": {"type": "integer", "minimum": 1, "maximum": 300},
        },
        "required": ["finding"],
        "additionalProperties": False,
    },
    "array-bounds": {"type": "array", "items": {"type": "integer"}, "minItems": 2, "maxItems": 4},
    "array-of-enums": {
        "type": "array",
        "items": {"enum": ["lung", "heart", "bone"]},
        "minItems": 1,
        "maxItems": 3,
    },
    "prefixItems": {
        "type": "array",
        "prefixItems": [{"type": "integer", "maximum": 9}, {"type": "boolean"}],
        "items": False,
    },
    "nested": {
        "type": "object",
        "properties": {
            "study": {
                "type": "object",
                "properties": {"modality": {"enum": ["CR", "CT", "MR"]}, "views": NAME},
                "required": ["modality", "views"],
                "additionalProperties": False,
            },
            "findings": {"type": "array", "items": NAME, "maxItems": 3},
        },
        "required": ["study", "findings"],
        "additionalProperties": False,
    },
    "anyOf-objects": {
        "anyOf": [
            {
                "type": "object",
                "properties": {"kind": {"const": "mass"}, "size_mm": {"type": "integer"}},
                "required": ["kind", "size_mm"],
                "additionalProperties": False,
            },
            {
                "type": "object",
                "properties": {"kind": {"const": "none"}},
                "required": ["kind"],
                "additionalProperties": False,
            },
        ]
    },
    "ref-defs": {
        "$defs": {
            "finding": {
                "type": "object",
                "properties": {
                    "label": NAME,
                    "score": {"type": "number", "minimum": 0, "maximum": 1},
                },
                "required": ["label", "score"],
                "additionalProperties": False,
            }
        },
        "type": "object",
        "properties": {"primary": {"$ref": "#/$defs/finding"}},
        "required": ["primary"],
        "additionalProperties": False,
    },
    "report": {
        "title": "Radiology report",
        "type": "object",
        "properties": {
            "findings": {"type": "string", "maxLength": 40, "description": "what is seen"},
            "impression": {"type": "string", "maxLength": 40},
            "birads": {"type": "integer", "minimum": 0, "maximum": 6},
        },
        "required": ["findings", "impression"],
        "additionalProperties": False,
    },
}
