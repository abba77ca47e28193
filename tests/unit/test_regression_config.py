"""config/plugins/regression.yaml: parsing, first match, placeholders, validation messages."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from plugwatch.regression.config import (
    CommandCheck,
    HttpCheck,
    RegressionConfig,
    RegressionConfigError,
    substitute,
)

REPO = Path(__file__).resolve().parents[2]


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "config" / "plugins" / "regression.yaml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def load(tmp_path: Path, text: str) -> RegressionConfig:
    return RegressionConfig.from_file(write(tmp_path, text))


def error(tmp_path: Path, text: str) -> str:
    with pytest.raises(RegressionConfigError) as info:
        load(tmp_path, text)
    return str(info.value)


def test_command_and_http_checks_with_defaults(tmp_path):
    cfg = load(tmp_path, """
regression:
  - tenant: acme
    plugin: pay
    checks:
      - command: [pytest, -q, tests]
      - name: sub
        command: ["{python}", run.py, 3]
        cwd: sub/dir
        env: [TOKEN_FOR_TESTS]
        set_env: {MODE: ci, N: 2}
        timeout_s: 5
      - http: {url: "http://svc/health"}
      - name: ready
        http:
          url: "https://svc/{plugin_id}/ready"
          method: post
          expect_status: 204
          expect_body: ok
          timeout_s: 2.5
          headers: {X-Tenant: "{tenant_id}"}
""")
    first, second, third, fourth = cfg.checks_for("acme", "pay")
    assert first == CommandCheck(name="pytest -q tests", argv=("pytest", "-q", "tests"), cwd=tmp_path / ".",
                                 timeout_s=60.0)
    assert second.name == "sub" and second.argv == ("{python}", "run.py", "3")
    assert second.cwd == tmp_path / "sub/dir"
    assert second.env == ("TOKEN_FOR_TESTS",) and second.set_env == (("MODE", "ci"), ("N", "2"))
    assert second.timeout_s == 5
    assert third == HttpCheck(name="GET http://svc/health", url="http://svc/health")
    assert (third.method, third.expect_status, third.expect_body, third.timeout_s) == ("GET", 200, None, 10.0)
    assert fourth.name == "ready" and fourth.method == "POST" and fourth.expect_status == 204
    assert fourth.expect_body == "ok" and fourth.timeout_s == 2.5 and fourth.headers == (("X-Tenant", "{tenant_id}"),)
    assert first.kind == "command" and third.kind == "http"


def test_first_matching_entry_wins_and_wildcards_match_any(tmp_path):
    cfg = load(tmp_path, """
regression:
  - {tenant: acme, plugin: pay, checks: [{name: exact, command: [a]}]}
  - {tenant: acme, plugin: "*", checks: [{name: acme-any, command: [b]}]}
  - {tenant: "*", plugin: pay, checks: [{name: any-pay, command: [c]}]}
  - {tenant: acme, plugin: pay, checks: [{name: shadowed, command: [d]}]}
  - {tenant: "*", plugin: "*", checks: []}
""")
    assert [c.name for c in cfg.checks_for("acme", "pay")] == ["exact"]
    assert [c.name for c in cfg.checks_for("acme", "other")] == ["acme-any"]
    assert [c.name for c in cfg.checks_for("globex", "pay")] == ["any-pay"]
    assert cfg.checks_for("globex", "other") == []


def test_no_match_and_missing_file_give_no_checks(tmp_path):
    assert load(tmp_path, "regression:\n  - {tenant: acme, plugin: pay, checks: [{command: [a]}]}\n") \
        .checks_for("globex", "x") == []
    missing = RegressionConfig.from_file(tmp_path / "nope" / "regression.yaml")
    assert missing.entries == [] and missing.checks_for("acme", "pay") == []
    assert load(tmp_path, "").checks_for("acme", "pay") == []


def test_cwd_resolves_against_explicit_base_dir(tmp_path):
    path = write(tmp_path, "regression:\n  - {tenant: a, plugin: b, checks: [{command: [x], cwd: tools}]}\n")
    (check,) = RegressionConfig.from_file(path, base_dir=tmp_path / "elsewhere").checks_for("a", "b")
    assert check.cwd == tmp_path / "elsewhere" / "tools"


def test_placeholders_are_replaced_in_argv_set_env_url_and_headers_only_as_exact_tokens():
    values = {"tenant_id": "acme", "plugin_id": "pay", "version": "3.2.2", "commit": "abc123", "alert_id": "al-1"}
    cmd = CommandCheck(name="c", argv=("{python}", "-c", "print({'k': 1}) # {version} {commit} {unknown} {{version}}"),
                       cwd=Path("."), set_env=(("ALERT", "{alert_id}/{tenant_id}"), ("RAW", "{not_a_token}")))
    done = cmd.with_values(values)
    assert done.argv == (sys.executable, "-c", "print({'k': 1}) # 3.2.2 abc123 {unknown} {3.2.2}")
    assert done.set_env == (("ALERT", "al-1/acme"), ("RAW", "{not_a_token}"))
    assert cmd.argv[0] == "{python}"  # the original is untouched

    http = HttpCheck(name="h", url="http://svc/{tenant_id}/{plugin_id}?v={version}&q={}", headers=(("X", "{commit}"),))
    done_http = http.with_values(values)
    assert done_http.url == "http://svc/acme/pay?v=3.2.2&q={}"
    assert done_http.headers == (("X", "abc123"),)

    assert substitute("{version}-{commit}", {"version": "1"}) == "1-"
    assert substitute("{python}", {"python": "/opt/py"}) == "/opt/py"


def test_environment_passes_only_the_allow_list_and_fixed_values():
    check = CommandCheck(name="c", argv=("x",), cwd=Path("."), env=("ALLOWED", "ABSENT"), set_env=(("FIXED", "1"),))
    worker = {"PATH": "/bin", "HOME": "/h", "LANG": "C.UTF-8", "ALLOWED": "yes", "SECRET": "no", "FIXED": "worker"}
    assert check.environment(worker) == {"PATH": "/bin", "HOME": "/h", "LANG": "C.UTF-8",
                                         "ALLOWED": "yes", "FIXED": "1"}


def test_shipped_config_has_the_payment_gateway_check_and_an_empty_fallback():
    cfg = RegressionConfig.from_file(REPO / "config" / "plugins" / "regression.yaml")
    (check,) = cfg.checks_for("acme", "payment-gateway")
    assert isinstance(check, CommandCheck)
    assert check.argv == ("{python}", "examples/regression/check_payment_gateway.py", "--version", "{version}")
    assert check.cwd.resolve() == REPO and check.timeout_s == 30
    assert (REPO / "examples/regression/check_payment_gateway.py").is_file()
    assert cfg.checks_for("acme", "invoice-export") == []


@pytest.mark.parametrize("text, expected", [
    ("regression: [1, 2", "not valid YAML"),
    ("- a\n- b\n", "top level must be a mapping"),
    ("regression: {tenant: a}\n", "'regression' must be a list"),
    ("regression: [not-a-mapping]\n", "regression[0] must be a mapping"),
    ("regression:\n  - {plugin: p, checks: []}\n", "regression[0] needs tenant"),
    ("regression:\n  - {tenant: t, plugin: p, checks: {command: [a]}}\n", "regression[0].checks must be a list"),
    ("regression:\n  - {tenant: t, plugin: p, owner: x, checks: []}\n", "unknown key(s) owner"),
    ("regression:\n  - {tenant: t, plugin: p, checks: [just-a-string]}\n", "checks[0] must be a mapping"),
    ("regression:\n  - {tenant: t, plugin: p, checks: [{name: x}]}\n", "needs either 'command'"),
    ("regression:\n  - {tenant: t, plugin: p, checks: [{command: [a], http: {url: 'http://x'}}]}\n",
     "has both 'command' and 'http'"),
    ("regression:\n  - {tenant: t, plugin: p, checks: [{command: 'pytest -q'}]}\n",
     "checks[0].command must be a non-empty list"),
    ("regression:\n  - {tenant: t, plugin: p, checks: [{command: []}]}\n", "must be a non-empty list"),
    ("regression:\n  - {tenant: t, plugin: p, checks: [{command: [a, [b]]}]}\n", "command[1] must be a string"),
    ("regression:\n  - {tenant: t, plugin: p, checks: [{command: [a], timeout_s: fast}]}\n",
     "timeout_s must be a positive number"),
    ("regression:\n  - {tenant: t, plugin: p, checks: [{command: [a], timeout_s: 0}]}\n",
     "timeout_s must be a positive number"),
    ("regression:\n  - {tenant: t, plugin: p, checks: [{command: [a], env: PATH}]}\n", "env must be a list"),
    ("regression:\n  - {tenant: t, plugin: p, checks: [{command: [a], set_env: [A]}]}\n", "set_env must be a mapping"),
    ("regression:\n  - {tenant: t, plugin: p, checks: [{command: [a], set_env: {A: [1]}}]}\n", "set_env.A must map"),
    ("regression:\n  - {tenant: t, plugin: p, checks: [{command: [a], timeout: 5}]}\n", "unknown key(s) timeout"),
    ("regression:\n  - {tenant: t, plugin: p, checks: [{command: [a], cwd: 3}]}\n", "cwd must be a directory path"),
    ("regression:\n  - {tenant: t, plugin: p, checks: [{name: '', command: [a]}]}\n", "name must be a non-empty"),
    ("regression:\n  - {tenant: t, plugin: p, checks: [{http: 'http://x'}]}\n", "http must be a mapping"),
    ("regression:\n  - {tenant: t, plugin: p, checks: [{http: {method: GET}}]}\n", "http.url must be an http"),
    ("regression:\n  - {tenant: t, plugin: p, checks: [{http: {url: 'ftp://x'}}]}\n", "http.url must be an http"),
    ("regression:\n  - {tenant: t, plugin: p, checks: [{http: {url: 'http://x', method: FETCH}}]}\n",
     "method must be one of"),
    ("regression:\n  - {tenant: t, plugin: p, checks: [{http: {url: 'http://x', expect_status: '200'}}]}\n",
     "expect_status must be an HTTP status"),
    ("regression:\n  - {tenant: t, plugin: p, checks: [{http: {url: 'http://x', expect_body: 5}}]}\n",
     "expect_body must be a string"),
    ("regression:\n  - {tenant: t, plugin: p, checks: [{http: {url: 'http://x', headers: [a]}}]}\n",
     "headers must be a mapping"),
    ("regression:\n  - {tenant: t, plugin: p, checks: [{http: {url: 'http://x', cwd: .}}]}\n", "unknown key(s) cwd"),
    ("regression:\n  - {tenant: t, plugin: p, checks: [{http: {url: 'http://x'}, timeout_s: 3}]}\n",
     "unknown key(s) timeout_s"),
])
def test_validation_errors_name_the_file_the_place_and_the_fix(tmp_path, text, expected):
    message = error(tmp_path, text)
    assert expected in message
    assert "regression.yaml" in message
