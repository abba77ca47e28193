"""Regression checks per plugin from ``config/plugins/regression.yaml`` (DESIGN §6 step 5).

Entries are matched by ``tenant`` and ``plugin`` ("*" matches any id; the first matching entry wins).
Each check is a command or an HTTP request. Placeholders ``{tenant_id}``, ``{plugin_id}``, ``{version}``,
``{commit}``, ``{alert_id}`` and ``{python}`` are replaced at run time (``Check.with_values``) by plain
string replacement of exactly these tokens, so other braces in argv or URLs are left alone.
"""

from __future__ import annotations

import sys
from collections.abc import Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import yaml

PLACEHOLDERS = ("tenant_id", "plugin_id", "version", "commit", "alert_id", "python")
ALWAYS_PASSED_ENV = ("PATH", "HOME", "LANG")
HTTP_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
COMMAND_TIMEOUT_S = 60.0
HTTP_TIMEOUT_S = 10.0

_ENTRY_KEYS = frozenset({"tenant", "plugin", "checks"})
_COMMAND_KEYS = frozenset({"name", "command", "cwd", "env", "set_env", "timeout_s"})
_HTTP_KEYS = frozenset({"url", "method", "expect_status", "expect_body", "timeout_s", "headers"})


class RegressionConfigError(ValueError):
    pass


def substitute(text: str, values: Mapping[str, str]) -> str:
    """``text`` with each ``{placeholder}`` replaced; a placeholder without a value becomes ""."""
    if "{" not in text:
        return text
    for key in PLACEHOLDERS:
        token = "{" + key + "}"
        if token in text:
            value = values.get(key)
            if value is None and key == "python":
                value = sys.executable
            text = text.replace(token, "" if value is None else str(value))
    return text


@dataclass(frozen=True)
class CommandCheck:
    """Run ``argv`` in ``cwd`` with only the allow-listed environment; exit 0 passes."""

    name: str
    argv: tuple[str, ...]
    cwd: Path
    env: tuple[str, ...] = ()
    set_env: tuple[tuple[str, str], ...] = ()
    timeout_s: float = COMMAND_TIMEOUT_S

    kind = "command"

    def with_values(self, values: Mapping[str, str]) -> CommandCheck:
        """This check with placeholders in argv and ``set_env`` values replaced."""
        return replace(self, argv=tuple(substitute(a, values) for a in self.argv),
                       set_env=tuple((k, substitute(v, values)) for k, v in self.set_env))

    def environment(self, worker_env: Mapping[str, str]) -> dict[str, str]:
        """PATH, HOME, LANG and the ``env`` names from ``worker_env``, then ``set_env`` on top."""
        out = {k: worker_env[k] for k in (*ALWAYS_PASSED_ENV, *self.env) if k in worker_env}
        out.update(self.set_env)
        return out


@dataclass(frozen=True)
class HttpCheck:
    """Request ``url``; the status must equal ``expect_status`` and the body contain ``expect_body``."""

    name: str
    url: str
    method: str = "GET"
    expect_status: int = 200
    expect_body: str | None = None
    timeout_s: float = HTTP_TIMEOUT_S
    headers: tuple[tuple[str, str], ...] = ()

    kind = "http"

    def with_values(self, values: Mapping[str, str]) -> HttpCheck:
        """This check with placeholders in the URL and header values replaced."""
        return replace(self, url=substitute(self.url, values),
                       headers=tuple((k, substitute(v, values)) for k, v in self.headers))


Check = CommandCheck | HttpCheck


@dataclass(frozen=True)
class RegressionEntry:
    tenant: str
    plugin: str
    checks: tuple[Check, ...]

    def matches(self, tenant_id: str, plugin_id: str) -> bool:
        return self.tenant in ("*", tenant_id) and self.plugin in ("*", plugin_id)


class RegressionConfig:
    def __init__(self, entries: list[RegressionEntry]):
        self.entries = entries

    @classmethod
    def from_file(cls, path: str | Path, base_dir: str | Path | None = None) -> RegressionConfig:
        """The checks file; a missing file means no checks. Relative ``cwd`` values resolve against
        ``base_dir`` (default: the repository root, the directory holding ``config/``)."""
        path = Path(path)
        if not path.exists():
            return cls([])
        base = Path(base_dir) if base_dir is not None else path.resolve().parent.parent.parent
        try:
            data = yaml.safe_load(path.read_text()) or {}
        except yaml.YAMLError as exc:
            raise RegressionConfigError(f"{path}: not valid YAML: {exc}") from None
        return cls.from_data(data, base, source=str(path))

    @classmethod
    def from_data(cls, data: Any, base_dir: str | Path, source: str = "regression config") -> RegressionConfig:
        """Entries from already-parsed YAML (``{"regression": [...]}``)."""
        if not isinstance(data, dict):
            raise RegressionConfigError(f"{source}: the top level must be a mapping with a 'regression' list")
        entries = data.get("regression") or []
        if not isinstance(entries, list):
            raise RegressionConfigError(f"{source}: 'regression' must be a list of entries")
        base = Path(base_dir)
        return cls([_entry(f"{source}: regression[{i}]", entry, base) for i, entry in enumerate(entries)])

    def lookup(self, tenant_id: str, plugin_id: str) -> RegressionEntry | None:
        return next((e for e in self.entries if e.matches(tenant_id, plugin_id)), None)

    def checks_for(self, tenant_id: str, plugin_id: str) -> list[Check]:
        """The first matching entry's checks; [] when none (the caller must not treat that as a pass)."""
        found = self.lookup(tenant_id, plugin_id)
        return list(found.checks) if found else []


def _entry(where: str, entry: Any, base: Path) -> RegressionEntry:
    if not isinstance(entry, dict):
        raise RegressionConfigError(f"{where} must be a mapping with tenant, plugin and checks")
    _no_unknown(where, entry, _ENTRY_KEYS)
    missing = [k for k in ("tenant", "plugin") if not entry.get(k)]
    if missing:
        raise RegressionConfigError(f"{where} needs {', '.join(missing)} (use \"*\" to match any)")
    checks = entry.get("checks")
    if checks is None:
        checks = []
    if not isinstance(checks, list):
        raise RegressionConfigError(f"{where}.checks must be a list of checks (command or http)")
    return RegressionEntry(str(entry["tenant"]), str(entry["plugin"]),
                           tuple(_check(f"{where}.checks[{i}]", c, base) for i, c in enumerate(checks)))


def _check(where: str, raw: Any, base: Path) -> Check:
    if not isinstance(raw, dict):
        raise RegressionConfigError(f"{where} must be a mapping with either 'command' or 'http'")
    has_command, has_http = "command" in raw, "http" in raw
    if has_command and has_http:
        raise RegressionConfigError(f"{where} has both 'command' and 'http'; split it into two checks")
    if not has_command and not has_http:
        raise RegressionConfigError(f"{where} needs either 'command' (argv list) or 'http' (url mapping)")
    name = raw.get("name")
    if name is not None and (not isinstance(name, str) or not name.strip()):
        raise RegressionConfigError(f"{where}.name must be a non-empty string")
    if has_http:
        _no_unknown(where, raw, frozenset({"name", "http"}))
        return _http(f"{where}.http", raw["http"], name)
    _no_unknown(where, raw, _COMMAND_KEYS)
    return _command(where, raw, name, base)


def _command(where: str, raw: dict[str, Any], name: str | None, base: Path) -> CommandCheck:
    argv = raw["command"]
    if not isinstance(argv, list) or not argv:
        raise RegressionConfigError(f"{where}.command must be a non-empty list of arguments, e.g. [pytest, -q]")
    for i, arg in enumerate(argv):
        if not isinstance(arg, (str, int, float)) or isinstance(arg, bool):
            raise RegressionConfigError(f"{where}.command[{i}] must be a string, got {type(arg).__name__}")
    args = tuple(str(a) for a in argv)
    cwd = raw.get("cwd", ".")
    if not isinstance(cwd, str) or not cwd:
        raise RegressionConfigError(f"{where}.cwd must be a directory path (relative to the repository root)")
    env = raw.get("env") or []
    if not isinstance(env, list) or not all(isinstance(v, str) and v for v in env):
        raise RegressionConfigError(f"{where}.env must be a list of environment variable names to pass through")
    set_env = raw.get("set_env") or {}
    if not isinstance(set_env, dict):
        raise RegressionConfigError(f"{where}.set_env must be a mapping of NAME: value")
    for key, value in set_env.items():
        if not isinstance(key, str) or not key or not _scalar(value):
            raise RegressionConfigError(f"{where}.set_env.{key} must map a name to a string value")
    return CommandCheck(
        name=name or _command_name(args),
        argv=args,
        cwd=base / cwd,
        env=tuple(env),
        set_env=tuple((k, str(v)) for k, v in set_env.items()),
        timeout_s=_timeout(where, raw, COMMAND_TIMEOUT_S),
    )


def _http(where: str, raw: Any, name: str | None) -> HttpCheck:
    if not isinstance(raw, dict):
        raise RegressionConfigError(f"{where} must be a mapping with at least 'url'")
    _no_unknown(where, raw, _HTTP_KEYS)
    url = raw.get("url")
    if not isinstance(url, str) or not url.startswith(("http://", "https://")):
        raise RegressionConfigError(f"{where}.url must be an http:// or https:// URL")
    method = raw.get("method", "GET")
    if not isinstance(method, str) or method.upper() not in HTTP_METHODS:
        raise RegressionConfigError(f"{where}.method must be one of {', '.join(sorted(HTTP_METHODS))}")
    status = raw.get("expect_status", 200)
    if not isinstance(status, int) or isinstance(status, bool) or not 100 <= status <= 599:
        raise RegressionConfigError(f"{where}.expect_status must be an HTTP status code (100-599)")
    body = raw.get("expect_body")
    if body is not None and not isinstance(body, str):
        raise RegressionConfigError(f"{where}.expect_body must be a string (a substring of the response body)")
    headers = raw.get("headers") or {}
    if not isinstance(headers, dict) or not all(isinstance(k, str) and _scalar(v) for k, v in headers.items()):
        raise RegressionConfigError(f"{where}.headers must be a mapping of header name to string value")
    return HttpCheck(
        name=name or f"{method.upper()} {url}",
        url=url,
        method=method.upper(),
        expect_status=status,
        expect_body=body,
        timeout_s=_timeout(where, raw, HTTP_TIMEOUT_S),
        headers=tuple((k, str(v)) for k, v in headers.items()),
    )


def _timeout(where: str, raw: dict[str, Any], default: float) -> float:
    value = raw.get("timeout_s", default)
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value <= 0:
        raise RegressionConfigError(f"{where}.timeout_s must be a positive number of seconds, got {value!r}")
    return float(value)


def _no_unknown(where: str, raw: dict[str, Any], allowed: frozenset[str]) -> None:
    unknown = sorted(str(k) for k in raw if k not in allowed)
    if unknown:
        raise RegressionConfigError(f"{where} has unknown key(s) {', '.join(unknown)}; "
                                    f"allowed: {', '.join(sorted(allowed))}")


def _scalar(value: Any) -> bool:
    return isinstance(value, (str, int, float)) and not isinstance(value, bool)


def _command_name(argv: tuple[str, ...]) -> str:
    text = " ".join(argv)
    return text if len(text) <= 80 else text[:77] + "..."
