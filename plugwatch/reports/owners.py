"""Plugin owners from ``config/plugins/owners.yaml``: who a report names, who besides the tenant may read it."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml


class OwnersError(ValueError):
    pass


@dataclass(frozen=True)
class Ownership:
    tenant: str
    plugin: str
    owner: str
    principals: frozenset[str]

    def matches(self, tenant_id: str, plugin_id: str) -> bool:
        return self.tenant in ("*", tenant_id) and self.plugin in ("*", plugin_id)


class Owners:
    def __init__(self, entries: list[Ownership]):
        self.entries = entries

    @classmethod
    def from_file(cls, path: Path) -> Owners:
        """The owners file; a missing file means no owners (reports say ``owner: null``)."""
        if not path.exists():
            return cls([])
        try:
            data = yaml.safe_load(path.read_text()) or {}
        except yaml.YAMLError as exc:
            raise OwnersError(f"{path}: not valid YAML: {exc}") from None
        entries = []
        for index, entry in enumerate(data.get("owners") or []):
            entries.append(_entry(path, index, entry))
        return cls(entries)

    def lookup(self, tenant_id: str, plugin_id: str) -> Ownership | None:
        return next((e for e in self.entries if e.matches(tenant_id, plugin_id)), None)

    def owner_of(self, tenant_id: str, plugin_id: str) -> str | None:
        found = self.lookup(tenant_id, plugin_id)
        return found.owner if found else None

    def principals_of(self, tenant_id: str, plugin_id: str) -> frozenset[str]:
        found = self.lookup(tenant_id, plugin_id)
        return found.principals if found else frozenset()


def _entry(path: Path, index: int, entry: Any) -> Ownership:
    if not isinstance(entry, dict):
        raise OwnersError(f"{path}: owners[{index}] must be a mapping")
    missing = [k for k in ("tenant", "plugin", "owner") if not entry.get(k)]
    if missing:
        raise OwnersError(f"{path}: owners[{index}] needs {', '.join(missing)}")
    principals = entry.get("principals") or []
    if not isinstance(principals, list):
        raise OwnersError(f"{path}: owners[{index}].principals must be a list of principal names")
    return Ownership(str(entry["tenant"]), str(entry["plugin"]), str(entry["owner"]),
                     frozenset(str(p) for p in principals))
