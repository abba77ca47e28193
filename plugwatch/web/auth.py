"""Bearer tokens -> principal, roles and tenants, from ``config/security/access.yaml``.

The file holds SHA-256 hashes of tokens, never the tokens. Pure logic: the views call
``Access.authenticate`` with the Authorization header and map ``AuthError`` to 401/403.
"""

from __future__ import annotations

import hashlib
import hmac
from dataclasses import dataclass
from pathlib import Path

import yaml

ROLES = frozenset({"security", "ops", "developer", "tenant_admin", "auditor"})


class AuthError(Exception):
    def __init__(self, status: int, error: str, message: str):
        super().__init__(message)
        self.status = status
        self.error = error
        self.message = message


@dataclass(frozen=True)
class Principal:
    name: str
    roles: frozenset[str]
    tenants: frozenset[str]  # "*" = every tenant

    def may_see_tenant(self, tenant_id: str) -> bool:
        return "*" in self.tenants or tenant_id in self.tenants

    def has_any_role(self, *roles: str) -> bool:
        return bool(self.roles.intersection(roles))


def token_hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


class Access:
    def __init__(self, principals: dict[str, Principal]):
        self._by_hash = principals

    @classmethod
    def from_file(cls, path: Path) -> Access:
        if not path.exists():
            raise FileNotFoundError(f"access file {path} not found; set PLUGWATCH_ACCESS_FILE")
        data = yaml.safe_load(path.read_text()) or {}
        principals: dict[str, Principal] = {}
        for entry in data.get("principals") or []:
            digest = str(entry.get("token_sha256", "")).lower()
            if len(digest) != 64:
                raise ValueError(f"{path}: principal {entry.get('name')!r} needs a 64-hex token_sha256")
            roles = frozenset(entry.get("roles") or [])
            unknown = roles - ROLES
            if unknown:
                raise ValueError(f"{path}: principal {entry.get('name')!r} has unknown roles {sorted(unknown)}")
            principals[digest] = Principal(
                name=str(entry["name"]), roles=roles, tenants=frozenset(entry.get("tenants") or [])
            )
        return cls(principals)

    def authenticate(self, authorization: str | None) -> Principal:
        if not authorization:
            raise AuthError(401, "unauthorized", "send 'Authorization: Bearer <token>'")
        scheme, _, token = authorization.strip().partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise AuthError(401, "unauthorized", "the Authorization header must be 'Bearer <token>'")
        digest = token_hash(token.strip())
        for known, principal in self._by_hash.items():
            if hmac.compare_digest(known, digest):
                return principal
        raise AuthError(401, "unauthorized", "unknown or revoked token")

    def require(self, authorization: str | None, *roles: str) -> Principal:
        principal = self.authenticate(authorization)
        if roles and not principal.has_any_role(*roles):
            raise AuthError(403, "forbidden", f"needs one of the roles: {', '.join(roles)}")
        return principal


def may_read_plugin(principal: Principal, tenant_id: str, owner_principals: frozenset[str] = frozenset()) -> bool:
    """Reports and exports of a plugin (DESIGN §8): the security and auditor roles (within their
    tenants), the plugin's owners, and principals of the plugin's own tenant -- named, not by "*"."""
    if principal.has_any_role("security", "auditor") and principal.may_see_tenant(tenant_id):
        return True
    return principal.name in owner_principals or tenant_id in principal.tenants
