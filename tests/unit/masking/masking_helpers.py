"""Helpers shared by the masking tests (imported by name: the test folder is on sys.path)."""

from __future__ import annotations


def strings_of(value) -> list[str]:
    """Every key, string and number (as text) inside a JSON-like value."""
    out: list[str] = []

    def walk(v) -> None:
        if isinstance(v, dict):
            for k, x in v.items():
                out.append(str(k))
                walk(x)
        elif isinstance(v, list):
            for x in v:
                walk(x)
        elif isinstance(v, str):
            out.append(v)
        elif v is not None and not isinstance(v, bool):
            out.append(str(v))

    walk(value)
    return out


def survives(secret: str, value) -> bool:
    return any(secret in s for s in strings_of(value))
