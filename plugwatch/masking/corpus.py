"""Realistic telemetry with planted secrets, for the masking bench and tests.

Every event is a log, span or metric shaped as DESIGN §3 and carries at least one secret or
personal value in a realistic place (message text, headers, query, body, stack trace, attributes,
gen_ai attributes), next to values that must stay readable (trace/span ids, UUIDs, timestamps,
versions, commits, ports, order numbers, near-miss numbers). ``Planted`` lists both so a test
can check that no secret survives and no readable value was lost.

Message bodies come from ../shared/data/loghub/*.log when that directory exists; synthetic
templates otherwise, so tests never depend on it.
"""

from __future__ import annotations

import base64
import random
import string
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson

from plugwatch.masking.validators import IBAN_LENGTHS, luhn_ok

LOGHUB_DIR = Path(__file__).resolve().parents[3] / "shared" / "data" / "loghub"

_ALNUM = string.ascii_letters + string.digits
_B64 = _ALNUM + "+/"
_B64URL = _ALNUM + "-_"


@dataclass
class Planted:
    """What went into one event: secrets that must not survive, values that must."""

    secrets: list[tuple[str, str]] = field(default_factory=list)  # (kind, value)
    readable: list[str] = field(default_factory=list)


def _rand(rng: random.Random, alphabet: str, n: int) -> str:
    return "".join(rng.choice(alphabet) for _ in range(n))


# Secret generators: each returns a value as it would be written somewhere -----------------------


def card_number(rng: random.Random, prefix: str | None = None, length: int | None = None) -> str:
    prefix = prefix or rng.choice(["4", "51", "55", "2221", "34", "37", "6011", "62", "35"])
    length = length or (15 if prefix in ("34", "37") else rng.choice([16, 16, 16, 19] if prefix == "62" else [16]))
    body = prefix + "".join(rng.choice(string.digits) for _ in range(length - len(prefix) - 1))
    for check in string.digits:
        if luhn_ok((body + check).encode()):
            return body + check
    raise AssertionError("unreachable: one check digit always satisfies Luhn")


def group_digits(rng: random.Random, digits: str, sep: str | None = None) -> str:
    sep = rng.choice(["", " ", "-"]) if sep is None else sep
    return sep.join(digits[i:i + 4] for i in range(0, len(digits), 4))


def cn_id(rng: random.Random, legacy: bool = False) -> str:
    region = rng.choice(["110105", "310104", "440305", "510107", "330106", "420111", "650102"])
    year, month, day = rng.randint(1950, 2005), rng.randint(1, 12), rng.randint(1, 28)
    seq = f"{rng.randint(0, 999):03d}"
    if legacy:
        return f"{region}{year % 100:02d}{month:02d}{day:02d}{seq}"
    body = f"{region}{year}{month:02d}{day:02d}{seq}"
    weights = (7, 9, 10, 5, 8, 4, 2, 1, 6, 3, 7, 9, 10, 5, 8, 4, 2)
    return body + "10X98765432"[sum(w * int(c) for w, c in zip(weights, body)) % 11]


def cn_mobile(rng: random.Random) -> str:
    d = rng.choice("3456789") + "".join(rng.choice(string.digits) for _ in range(9))
    n = "1" + d
    return rng.choice([
        n, f"+86{n}", f"+86 {n}", f"+86 {n[:3]} {n[3:7]} {n[7:]}", f"+86-{n[:3]}-{n[3:7]}-{n[7:]}",
        f"{n[:3]}-{n[3:7]}-{n[7:]}", f"{n[:3]} {n[3:7]} {n[7:]}", f"0086 {n}", f"86-{n}",
    ])


def e164(rng: random.Random) -> str:
    return rng.choice([
        f"+1{rng.randint(201, 989)}{rng.randint(2000000, 9999999)}",
        f"+1 {rng.randint(201, 989)} {rng.randint(200, 999)} {rng.randint(1000, 9999)}",
        f"+44 20 {rng.randint(1000, 9999)} {rng.randint(1000, 9999)}",
        f"+49{rng.randint(30, 89)}{rng.randint(1000000, 9999999)}",
        f"+81-3-{rng.randint(1000, 9999)}-{rng.randint(1000, 9999)}",
    ])


def email(rng: random.Random) -> str:
    user = rng.choice(["zhang.san", "li_si", "wang.wu+test", "ops-team", "j.doe", "alice", "bob.smith99"])
    domain = rng.choice(["example.com", "mail.example.org", "corp.example.com.cn", "qq.com", "163.com", "gmail.com"])
    return f"{user}{rng.randint(1, 999)}@{domain}"


def iban(rng: random.Random) -> str:
    country = rng.choice(["DE", "GB", "FR", "NL", "ES", "IT", "CH"])
    bban_len = IBAN_LENGTHS[country] - 4
    bban = ("WEST" if country == "GB" else "") + "".join(rng.choice(string.digits) for _ in range(bban_len - (4 if country == "GB" else 0)))
    numeric = "".join(str(int(c, 36)) for c in bban + country + "00")
    value = f"{country}{98 - int(numeric) % 97:02d}{bban}"
    return " ".join(value[i:i + 4] for i in range(0, len(value), 4)) if rng.random() < 0.5 else value


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def jwt(rng: random.Random) -> str:
    head = _b64url(orjson.dumps({"alg": rng.choice(["HS256", "RS256"]), "typ": "JWT"}))
    body = _b64url(orjson.dumps({"sub": str(rng.randint(1, 10**6)), "tenant": "t-acme", "exp": 1_900_000_000}))
    return f"{head}.{body}.{_rand(rng, _B64URL, 43)}"


def pem(rng: random.Random) -> str:
    kind = rng.choice(["RSA PRIVATE KEY", "PRIVATE KEY", "EC PRIVATE KEY", "OPENSSH PRIVATE KEY", "ENCRYPTED PRIVATE KEY"])
    lines = [_rand(rng, _B64, 64) for _ in range(rng.randint(3, 8))]
    return f"-----BEGIN {kind}-----\n" + "\n".join(lines) + f"\n-----END {kind}-----"


SECRET_MAKERS: dict[str, Callable[[random.Random], str]] = {
    "email": email,
    "cn_mobile": cn_mobile,
    "e164": e164,
    "cn_id": cn_id,
    "cn_id15": lambda rng: cn_id(rng, legacy=True),
    "card": lambda rng: group_digits(rng, card_number(rng)),
    "unionpay": lambda rng: group_digits(rng, card_number(rng, "62", 16), " "),
    "iban": iban,
    "jwt": jwt,
    "aws_key_id": lambda rng: rng.choice(["AKIA", "ASIA"]) + _rand(rng, string.ascii_uppercase + "234567", 16),
    "aws_secret": lambda rng: _rand(rng, _B64, 19) + rng.choice("0123456789/+") + _rand(rng, _B64, 20),
    "github": lambda rng: rng.choice(["ghp_", "gho_", "ghs_"]) + _rand(rng, _ALNUM, 36),
    "github_pat": lambda rng: "github_pat_" + _rand(rng, _ALNUM, 22) + "_" + _rand(rng, _ALNUM, 59),
    "slack": lambda rng: f"xox{rng.choice('bpas')}-{rng.randint(10**11, 10**12)}-{rng.randint(10**12, 10**13)}-{_rand(rng, _ALNUM, 24)}",
    "stripe": lambda rng: rng.choice(["sk_live_", "rk_live_"]) + _rand(rng, _ALNUM, 24),
    "google": lambda rng: "AIza" + _rand(rng, _B64URL, 35),
    "openai": lambda rng: rng.choice(["sk-", "sk-proj-"]) + _rand(rng, _ALNUM, 48),
    "opaque": lambda rng: _rand(rng, _ALNUM, 12) + rng.choice("0123456789") + _rand(rng, _ALNUM, 11),
    "password": lambda rng: rng.choice(["hunter2", "P@ssw0rd!", "correct-horse", "s3cr3t-Value", "Tr0ub4dor&3"]) + str(rng.randint(10, 99)),
}


# Places: how a secret of a kind is written into an event ----------------------------------------

_TEXT_TEMPLATES = {
    "email": ["password reset requested by {v}", "用户邮箱 {v} 验证失败", "notify <{v}> about plugin failure"],
    "cn_mobile": ["sms code sent to {v}", "用户手机号{v}绑定成功", "callback phone={v} failed"],
    "e164": ["calling {v} for on-call escalation", "contact: {v}"],
    "cn_id": ["实名认证失败 身份证号 {v}", "kyc check id={v} rejected"],
    "cn_id15": ["legacy id {v} migrated", "身份证:{v}"],
    "card": ["payment failed for card {v} amount=42.10", "charge declined: {v} (insufficient funds)"],
    "unionpay": ["银联卡 {v} 支付失败", "unionpay card {v} declined"],
    "iban": ["payout to {v} queued", "SEPA transfer IBAN {v} rejected"],
    "jwt": ["upstream auth header Authorization: Bearer {v}", "token expired: {v}", "id_token={v}"],
    "aws_key_id": ["using credentials {v} for s3 upload", "aws_access_key_id={v}"],
    "aws_secret": ["aws_secret_access_key = {v}", "s3 client init with secret {v}"],
    "github": ["git clone https://x-access-token:{v}@github.com/acme/plugin.git", "GITHUB_TOKEN={v}"],
    "github_pat": ["using PAT {v} for release", "token: {v}"],
    "slack": ["posting alert with {v}", "SLACK_BOT_TOKEN={v}"],
    "stripe": ["stripe.api_key = '{v}'", "charge via {v} failed"],
    "google": ["maps lookup https://maps.googleapis.com/maps/api/geocode/json?address=x&key={v}", "GOOGLE_API_KEY={v}"],
    "openai": ["llm call with key {v} returned 429", "OPENAI_API_KEY={v}"],
    "opaque": ["login ok session=abc password={v} next=/home", "db connect postgres://app:{v}@db.internal:5432/plugins",
               "mysql://root:{v}@10.0.3.7:3306/orders", "config {{\"api_key\": \"{v}\", \"region\": \"cn\"}}",
               "Authorization: Bearer {v}", "retry with client_secret: {v}"],
    "password": ["login failed user=admin password={v}", "redis://:{v}@cache.internal:6379/0", "passwd: \"{v}\""],
}

_KEY_PLACES = {  # kind -> field names whose value is the bare secret
    "email": ["email", "userEmail", "contact_email"],
    "cn_mobile": ["phone", "mobile", "phoneNumber"],
    "e164": ["phone", "mobile_number"],
    "cn_id": ["id_card", "idNumber", "id_number"],
    "cn_id15": ["id_card"],
    "card": ["card_number", "cardNumber", "card"],
    "unionpay": ["card_number"],
    "iban": ["iban", "bank_account"],
    "password": ["password", "passwd", "pwd", "db_password"],
    "opaque": ["access_token", "refresh_token", "client_secret", "apiKey", "x-api-key", "session", "credential", "cookie", "token", "secret"],
}

_LOGGERS = ["com.acme.pay.Client", "plugin.runtime", "app.handlers.checkout", "org.apache.kafka.clients", "llm.gateway"]
_HOSTS = ["node-17.prod.internal", "ip-10-0-3-7", "worker-3", "edge-gw-2"]
_SYNTHETIC = [
    "GET /api/v2/orders/{n} completed in {ms} ms status=200 cache=miss",
    "worker {k} picked job batch-{n} from queue plugin-jobs (attempt {k})",
    "connection pool stats: active={k} idle={k} waiting=0 max=64",
    "retrying upstream call to inventory-service:8443 after timeout ({k}/3)",
    "deployed commit {commit} as version {version}",
    "order {order} shipped, request {uuid}",
]


def loghub_lines(limit_per_file: int = 400) -> list[str]:
    lines: list[str] = []
    if LOGHUB_DIR.is_dir():
        for path in sorted(LOGHUB_DIR.glob("*.log")):
            with open(path, encoding="utf-8", errors="replace") as handle:
                for i, line in enumerate(handle):
                    if i >= limit_per_file:
                        break
                    line = line.strip()
                    if 30 <= len(line) <= 220:
                        lines.append(line)
    return lines


def _put(target: dict[str, Any], key: str, value: Any) -> None:
    """Add without overwriting an earlier plant (a second one gets a numbered key)."""
    n = 2
    name = key
    while name in target:
        name, n = f"{key}_{n}", n + 1
    target[name] = value


class CorpusGenerator:
    """Deterministic (per seed) events with planted secrets; ``use_loghub`` only picks bodies."""

    def __init__(self, seed: int = 1, use_loghub: bool = True) -> None:
        self.rng = random.Random(seed)
        self.bodies = loghub_lines() if use_loghub else []

    def _readables(self, planted: Planted) -> dict[str, str]:
        rng = self.rng
        values = {
            "trace_id": _rand(rng, "0123456789abcdef", 32),
            "span_id": _rand(rng, "0123456789abcdef", 16),
            "uuid": str(uuid.UUID(int=rng.getrandbits(128))),
            "commit": _rand(rng, "0123456789abcdef", 40),
            "version": f"{rng.randint(0, 9)}.{rng.randint(0, 30)}.{rng.randint(0, 99)}",
            "order": f"{rng.randint(2023, 2025)}{rng.randint(1, 12):02d}{rng.randint(1, 28):02d}{rng.randint(0, 999999):06d}",
            "bad_card": "4111 1111 1111 1112",
        }
        planted.readable.extend([values["trace_id"], values["span_id"], values["uuid"], values["version"]])
        return values

    def _body(self, r: dict[str, str]) -> str:
        rng = self.rng
        if self.bodies and rng.random() < 0.7:
            return rng.choice(self.bodies)
        return rng.choice(_SYNTHETIC).format(
            n=rng.randint(1, 99999), ms=rng.randint(1, 5000), k=rng.randint(1, 9),
            commit=r["commit"], version=r["version"], order=r["order"], uuid=r["uuid"])

    def event(self) -> tuple[dict[str, Any], Planted]:
        rng = self.rng
        planted = Planted()
        r = self._readables(planted)
        roll = rng.random()
        kind = "log" if roll < 0.7 else "span" if roll < 0.9 else "metric"
        ev = getattr(self, f"_{kind}")(r)
        for _ in range(rng.choice([1, 1, 2, 2, 3])):
            self._plant(ev, kind, planted)
        if rng.random() < 0.3:
            self._decoy(ev, r, planted)
        return ev, planted

    def _decoy(self, ev: dict[str, Any], r: dict[str, str], planted: Planted) -> None:
        """Near misses and readable values that look a little like secrets."""
        rng = self.rng
        good_id = cn_id(rng)
        wrong_id = good_id[:17] + "10X98765432"[("10X98765432".index(good_id[17]) + 1) % 11]
        bad_card = card_number(rng, "4")
        bad_card = bad_card[:-1] + str((int(bad_card[-1]) + 1) % 10)
        decoy = rng.choice([
            f"ref {group_digits(rng, bad_card, ' ')}", f"id {wrong_id} not found", f"request {r['uuid']} done",
            f"upgraded to v{r['version']}", "listening on 0.0.0.0:8443", f"batch at {rng.randint(1_714_000_000_000, 1_716_000_000_000)}",
            f"trace {r['trace_id']} span {r['span_id']}", f"commit {r['commit']}", f"order {r['order']} paid",
        ])
        planted.readable.append(decoy)
        ev.setdefault("attributes", {})["decoy"] = decoy

    def events(self, n: int) -> list[tuple[dict[str, Any], Planted]]:
        return [self.event() for _ in range(n)]

    def _common(self, r: dict[str, str]) -> dict[str, Any]:
        rng = self.rng
        return {
            "tenant_id": f"t-{rng.choice(['acme', 'globex', 'initech', 'umbrella'])}",
            "plugin_id": f"plugin-{rng.randint(1, 500)}",
            "instance_id": f"i-{_rand(rng, '0123456789abcdef', 8)}",
            "host": rng.choice(_HOSTS),
        }

    def _log(self, r: dict[str, str]) -> dict[str, Any]:
        rng = self.rng
        ev = {"ts": f"2024-05-{rng.randint(1, 28):02d}T{rng.randint(0, 23):02d}:{rng.randint(0, 59):02d}:{rng.randint(0, 59):02d}.{rng.randint(0, 999):03d}Z",
              **self._common(r), "plugin_version": r["version"], "env": "prod",
              "region": rng.choice(["cn-east-1", "eu-west-1"]), "level": rng.choice(["INFO", "WARN", "ERROR"]),
              "logger": rng.choice(_LOGGERS), "message": self._body(r), "trace_id": r["trace_id"], "span_id": r["span_id"],
              "attributes": {"http.status_code": rng.choice([200, 401, 502]), "retry": rng.randint(0, 3), "commit": r["commit"]}}
        if rng.random() < 0.4:
            ev["request"] = {"method": rng.choice(["GET", "POST"]), "url": f"https://api.example.com:8443/v1/orders/{r['order']}?page=2",
                             "headers": {"Content-Type": "application/json", "X-Request-Id": r["uuid"]}, "query": {"page": "2"},
                             "body": orjson.dumps({"order_id": r["order"], "amount": 42.1}).decode()}
        if rng.random() < 0.25:
            ev["exception"] = {"type": "ConnectionError", "message": f"timeout after {rng.randint(1, 30)}000 ms",
                               "stacktrace": 'Traceback (most recent call last):\n  File "/app/pay/client.py", line 88, in charge\n    resp = session.post(url, headers=h)\nConnectionError: upstream reset'}
        return ev

    def _span(self, r: dict[str, str]) -> dict[str, Any]:
        rng = self.rng
        start = rng.randint(1_714_000_000_000, 1_716_000_000_000)
        ev = {"trace_id": r["trace_id"], "span_id": r["span_id"], "parent_span_id": _rand(rng, "0123456789abcdef", 16),
              "name": rng.choice(["POST /v1/charge", "llm.chat", "db.query"]), "start_ts": start, "end_ts": start + rng.randint(1, 900),
              "status": rng.choice(["OK", "ERROR"]), **self._common(r),
              "attributes": {"service.version": r["version"], "net.peer.port": 5432, "gen_ai.system": "openai",
                             "gen_ai.request.model": "gpt-4o-mini", "gen_ai.usage.input_tokens": rng.randint(10, 900),
                             "gen_ai.completion": "The order status is shipped."}}
        return ev

    def _metric(self, r: dict[str, str]) -> dict[str, Any]:
        rng = self.rng
        return {"ts": rng.randint(1_714_000_000_000, 1_716_000_000_000), "name": "plugin.requests", "value": rng.random() * 100,
                "unit": "1", **self._common(r), "attributes": {"route": "/v1/charge", "version": r["version"], "uuid": r["uuid"]}}

    def _plant(self, ev: dict[str, Any], kind: str, planted: Planted) -> None:
        rng = self.rng
        secret_kind = rng.choice(list(SECRET_MAKERS))
        value = SECRET_MAKERS[secret_kind](rng)
        planted.secrets.append((secret_kind, value))
        text = rng.choice(_TEXT_TEMPLATES.get(secret_kind, ["value {v}"])).format(v=value)
        attrs = ev.setdefault("attributes", {})
        place = rng.choice(["message", "key", "attr_text", "gen_ai", "stack", "header", "query", "body", "nested"])
        if secret_kind == "jwt" and place == "header":
            ev.setdefault("request", {}).setdefault("headers", {})["Authorization"] = f"Bearer {value}"
        elif place == "key" and secret_kind in _KEY_PLACES:
            headers = ev.get("request", {}).get("headers")
            target = headers if headers is not None and rng.random() < 0.3 else attrs
            _put(target, rng.choice(_KEY_PLACES[secret_kind]), value)
        elif place == "message" and kind == "log":
            ev["message"] = f"{ev['message']} {text}"
        elif place == "gen_ai":
            _put(attrs, rng.choice(["gen_ai.prompt", "gen_ai.completion"]), f"Sure! Here is what you asked for: {text}. Anything else?")
        elif place == "stack":
            trace = ev.setdefault("exception", {"type": "ValueError", "message": "bad input"})
            trace["stacktrace"] = (trace.get("stacktrace", "") + f'\n  File "/app/handlers.py", line 41, in handle\n'
                                   f"    raise ValueError({text!r})\nValueError: {text}")
        elif place == "header":
            _put(ev.setdefault("request", {}).setdefault("headers", {}), "X-Debug-Note", text)
        elif place == "query":
            _put(ev.setdefault("request", {}).setdefault("query", {}), "q", text)
        elif place == "body":
            request = ev.setdefault("request", {})
            request["body"] = orjson.dumps({"note": text, "prev": request.get("body"), "items": [1, 2]}).decode()
        elif place == "nested":
            _put(attrs, "ctx", {"steps": [{"detail": text}], "n": 3})
        else:
            _put(attrs, "note", text)
