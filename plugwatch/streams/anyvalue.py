"""OTLP attribute values <-> plain JSON values.

OTLP carries attribute values as a tagged union (AnyValue); plugwatch records carry plain JSON
values, so a kvlist becomes a dict, an array a list, and bytes a base64 string (JSON has no bytes).
Both OTLP wire forms are read: protobuf messages, and OTLP/JSON dicts in which int64 values are
strings and trace/span ids are hex.
"""

from __future__ import annotations

import base64
from typing import Any

_INT64_MIN = -(2**63)
_INT64_MAX = 2**63 - 1
_SCALARS = frozenset({"string_value", "int_value", "bool_value", "double_value"})


def value_from_proto(value: Any) -> Any:
    """Flatten an ``AnyValue`` message; an unset value is None."""
    kind = value.WhichOneof("value")
    # Ordered by how often each kind appears in real attribute sets.
    if kind == "string_value":
        return value.string_value
    if kind == "int_value":
        return value.int_value
    if kind == "bool_value":
        return value.bool_value
    if kind == "double_value":
        return value.double_value
    if kind == "array_value":
        return [value_from_proto(item) for item in value.array_value.values]
    if kind == "kvlist_value":
        return {kv.key: value_from_proto(kv.value) for kv in value.kvlist_value.values}
    if kind == "bytes_value":
        return base64.b64encode(value.bytes_value).decode("ascii")
    return None


def attributes_from_proto(key_values: Any) -> dict[str, Any]:
    """A repeated ``KeyValue`` field as a dict (a repeated key keeps its last value)."""
    attributes = {}
    for kv in key_values:
        value = kv.value
        kind = value.WhichOneof("value")
        # Scalars inline: this loop is most of the cost of decoding a protobuf batch.
        attributes[kv.key] = getattr(value, kind) if kind in _SCALARS else value_from_proto(value)
    return attributes


def value_from_json(value: dict[str, Any] | None) -> Any:
    """Flatten an OTLP/JSON ``AnyValue`` object; ``{}`` or null is None."""
    if not value:
        return None
    found = value.get("stringValue")
    if found is not None:
        return found
    found = value.get("intValue")
    if found is not None:
        return int(found)  # int64 is a JSON string in the protobuf JSON mapping
    found = value.get("boolValue")
    if found is not None:
        return bool(found)
    found = value.get("doubleValue")
    if found is not None:
        return float(found)  # also reads the mapping's "NaN" / "Infinity" strings
    found = value.get("arrayValue")
    if found is not None:
        return [value_from_json(item) for item in found.get("values") or ()]
    found = value.get("kvlistValue")
    if found is not None:
        return attributes_from_json(found.get("values"))
    found = value.get("bytesValue")
    if found is not None:
        return found  # already base64 in OTLP/JSON
    return None


def attributes_from_json(key_values: list[dict[str, Any]] | None) -> dict[str, Any]:
    """An OTLP/JSON ``attributes`` array as a dict."""
    if not key_values:
        return {}
    return {kv["key"]: value_from_json(kv.get("value")) for kv in key_values}


def id_from_json(value: str | None) -> str:
    """A trace or span id from OTLP/JSON as lowercase hex.

    OTLP/JSON writes ids as hex, unlike the generic protobuf JSON mapping; producers that use the
    generic mapping write base64 instead, which is told apart by its length (24 or 12 characters
    for 16- or 8-byte ids, where hex would have 32 or 16).
    """
    if not value:
        return ""
    if len(value) in (24, 12):
        try:
            decoded = base64.b64decode(value, validate=True)
        except ValueError:
            decoded = b""
        if len(decoded) in (16, 8):
            return decoded.hex()
    return value.lower()


def set_value(target: Any, value: Any) -> None:
    """Fill the ``AnyValue`` message ``target`` from a plain Python value (None leaves it unset)."""
    # bool before int: bool is a subclass of int.
    if isinstance(value, str):
        target.string_value = value
    elif isinstance(value, bool):
        target.bool_value = value
    elif isinstance(value, int):
        if _INT64_MIN <= value <= _INT64_MAX:
            target.int_value = value
        else:
            target.string_value = str(value)  # keeps the digits that int64 cannot hold
    elif isinstance(value, float):
        target.double_value = value
    elif isinstance(value, (bytes, bytearray)):
        target.bytes_value = bytes(value)
    elif isinstance(value, dict):
        kvlist = target.kvlist_value
        kvlist.SetInParent()  # an empty dict is still a kvlist, not an unset value
        set_attributes(kvlist.values, value)
    elif isinstance(value, (list, tuple)):
        array = target.array_value
        array.SetInParent()
        for item in value:
            set_value(array.values.add(), item)
    elif value is not None:
        target.string_value = str(value)


def set_attributes(key_values: Any, attributes: dict[str, Any]) -> None:
    """Append ``attributes`` to a repeated ``KeyValue`` field."""
    for key, value in attributes.items():
        kv = key_values.add()
        kv.key = str(key)
        set_value(kv.value, value)
