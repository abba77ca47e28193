"""Plugin owners from ``config/plugins/owners.yaml``: who a report and a ticket name (owner, team,
contact, the assignee per ticket system), who besides the tenant may read the plugin's reports."""

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
    team: str | None = None
    contact: str | None = None
    assignees: tuple[tuple[str, str], ...] = ()  # (ticket system or "default", assignee)

    def assignee_for(self, system: str) -> str | None:
        """The assignee for ``system`` (generic, jira, github, local), else the entry's default."""
        named = dict(self.assignees)
        return named.get(system) or named.get("default")

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
    assignee = entry.get("assignee")
    if isinstance(assignee, str):
        assignees = (("default", assignee),)
    elif isinstance(assignee, dict) and all(isinstance(v, str) for v in assignee.values()):
        assignees = tuple((str(k), v) for k, v in assignee.items())
    elif assignee is None:
        assignees = ()
    else:
        raise OwnersError(f"{path}: owners[{index}].assignee must be a name or a mapping of ticket system -> name")
    for name in ("team", "contact"):
        if entry.get(name) is not None and not isinstance(entry[name], str):
            raise OwnersError(f"{path}: owners[{index}].{name} must be a string")
    return Ownership(str(entry["tenant"]), str(entry["plugin"]), str(entry["owner"]),
                     frozenset(str(p) for p in principals), entry.get("team"), entry.get("contact"), assignees)
