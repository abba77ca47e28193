"""Signed export links: round trip, tampering of any byte, expiry, wrong key -- on a clock set by hand."""

import base64
from urllib.parse import parse_qs, urlsplit

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from plugwatch.reports.exports import (
    EXPORT_PATH,
    MAX_EXPORT_ID_CHARS,
    ExportRefused,
    ExportSigner,
    ExportSpec,
)

BASE = 1_795_000_000_000
KEY = b"k" * 32


class Clock:
    def __init__(self, now: int = BASE):
        self.now = now

    def __call__(self) -> int:
        return self.now


def spec(**changes) -> ExportSpec:
    fields = dict(
        tenant_id="tenant-acme",
        plugin_id="pay-gateway",
        from_ms=BASE - 600_000,
        to_ms=BASE,
        signals=("logs", "traces"),
        created_by="svc-debug",
        reason="report RPT-20261124-000042 incomplete",
        nonce="5f1c2a9e0b7d4c13",
    )
    return ExportSpec(**{**fields, **changes})


def refused(signer: ExportSigner, export_id, expires, sig) -> str:
    with pytest.raises(ExportRefused) as caught:
        signer.verify(export_id, expires, sig)
    return caught.value.reason


def test_round_trip_from_the_path_alone():
    clock = Clock()
    issued = ExportSigner(KEY, clock).issue(spec(), ttl_s=3600)
    assert issued.expires_at == BASE + 3_600_000
    url = urlsplit(issued.path)
    assert url.path == EXPORT_PATH + issued.export_id
    query = {k: v[0] for k, v in parse_qs(url.query).items()}
    assert query == {"expires": str(issued.expires_at), "sig": issued.sig}
    # another worker, same key, after a restart: nothing but the link is needed
    other = ExportSigner(KEY, Clock(BASE + 10_000))
    assert other.verify(url.path.removeprefix(EXPORT_PATH), query["expires"], query["sig"]) == spec()
    assert other.verify(issued.export_id, issued.expires_at, issued.sig) == spec()


def test_export_id_is_base64url_of_canonical_json():
    issued = ExportSigner(KEY, Clock()).issue(spec(), ttl_s=60)
    assert "=" not in issued.export_id
    decoded = base64.urlsafe_b64decode(issued.export_id + "=" * (-len(issued.export_id) % 4))
    assert decoded == orjson.dumps(orjson.loads(decoded), option=orjson.OPT_SORT_KEYS)
    assert orjson.loads(decoded)["signals"] == ["logs", "traces"]


def test_expired_link_refused_once_the_clock_reaches_expiry():
    clock = Clock()
    signer = ExportSigner(KEY, clock)
    issued = signer.issue(spec(), ttl_s=60)
    clock.now = issued.expires_at - 1
    assert signer.verify(issued.export_id, issued.expires_at, issued.sig) == spec()
    clock.now = issued.expires_at
    assert refused(signer, issued.export_id, issued.expires_at, issued.sig) == "expired"


def test_extending_the_expiry_is_tampering():
    clock = Clock()
    signer = ExportSigner(KEY, clock)
    issued = signer.issue(spec(), ttl_s=60)
    clock.now = issued.expires_at + 1
    assert refused(signer, issued.export_id, issued.expires_at + 86_400_000, issued.sig) == "tampered"


def test_wrong_key_refused():
    issued = ExportSigner(KEY, Clock()).issue(spec(), ttl_s=60)
    other = ExportSigner(b"z" * 32, Clock())
    assert refused(other, issued.export_id, issued.expires_at, issued.sig) == "tampered"


@pytest.mark.parametrize(
    "export_id, expires, sig",
    [
        (None, "1", "0" * 64),
        ("", "1", "0" * 64),
        ("abc", None, "0" * 64),
        ("abc", "", "0" * 64),
        ("abc", "0123", "0" * 64),
        ("abc", "-5", "0" * 64),
        ("abc", True, "0" * 64),
        ("abc", "1", None),
        ("abc", "1", ""),
        ("abc", "1", "ü" * 64),
        ("a.b", "1", "0" * 64),
        ("a" * (MAX_EXPORT_ID_CHARS + 1), "1", "0" * 64),
    ],
)
def test_malformed_links_refused_as_tampered(export_id, expires, sig):
    assert refused(ExportSigner(KEY, Clock()), export_id, expires, sig) == "tampered"


def test_correctly_signed_garbage_is_still_refused():
    # only a key holder can produce this, but the decoded bytes are still not trusted to be a spec
    clock = Clock()
    signer = ExportSigner(KEY, clock)
    wrong_type = orjson.dumps({**orjson.loads(spec().canonical_json()), "from_ms": "x"})
    for payload in (b"not json", b"[1,2]", b'{"tenant_id":"t"}', wrong_type):
        export_id = base64.urlsafe_b64encode(payload).rstrip(b"=").decode()
        sig = signer._sign(export_id, str(BASE + 1000))
        assert refused(signer, export_id, BASE + 1000, sig) == "tampered"


def test_ttl_and_size_limits():
    signer = ExportSigner(KEY, Clock())
    for ttl in (0, 7 * 24 * 3600 + 1, -1):
        with pytest.raises(ValueError, match="ttl"):
            signer.issue(spec(), ttl_s=ttl)
    signer.issue(spec(), ttl_s=7 * 24 * 3600)
    with pytest.raises(ValueError, match="too large"):
        signer.issue(spec(reason="x" * 4000), ttl_s=60)
    with pytest.raises(ValueError, match="key"):
        ExportSigner(b"short", Clock())


@pytest.mark.parametrize(
    "changes",
    [
        {"signals": ("logs", "pcap")},
        {"signals": ()},
        {"signals": ["logs"]},
        {"from_ms": BASE + 1, "to_ms": BASE},
        {"tenant_id": ""},
        {"from_ms": 1.5},
    ],
)
def test_invalid_specs_rejected(changes):
    with pytest.raises(ValueError):
        spec(**changes)


def test_nonce_makes_each_export_distinct():
    signer = ExportSigner(KEY, Clock())
    fields = dict(tenant_id="t", plugin_id="p", from_ms=1, to_ms=2, signals=("logs",), created_by="u", reason="manual")
    a, b = ExportSpec(**fields), ExportSpec(**fields)
    assert a.nonce != b.nonce
    assert signer.issue(a, 60).export_id != signer.issue(b, 60).export_id


@settings(max_examples=300, deadline=None)
@given(data=st.data())
def test_any_changed_byte_is_tampering(data):
    clock = Clock()
    signer = ExportSigner(KEY, clock)
    issued = signer.issue(spec(), ttl_s=600)
    parts = {"export_id": issued.export_id, "expires": str(issued.expires_at), "sig": issued.sig}
    which = data.draw(st.sampled_from(sorted(parts)))
    original = parts[which]
    at = data.draw(st.integers(0, len(original) - 1))
    replacement = data.draw(st.characters(codec="ascii").filter(lambda c: c != original[at]))
    parts[which] = original[:at] + replacement + original[at + 1 :]
    assert refused(signer, parts["export_id"], parts["expires"], parts["sig"]) == "tampered"


@settings(max_examples=100, deadline=None)
@given(
    cut=st.integers(1, 20),
    which=st.sampled_from(["export_id", "expires", "sig"]),
    extra=st.text("0123456789abcdef", min_size=1, max_size=4),
)
def test_truncated_or_extended_parts_are_tampering(cut, which, extra):
    signer = ExportSigner(KEY, Clock())
    issued = signer.issue(spec(), ttl_s=600)
    parts = {"export_id": issued.export_id, "expires": str(issued.expires_at), "sig": issued.sig}
    for changed in (parts[which][:-cut], parts[which] + extra):
        tampered = {**parts, which: changed}
        assert refused(signer, tampered["export_id"], tampered["expires"], tampered["sig"]) == "tampered"
