"""Property tests: a secret planted anywhere in random nested JSON or free text never survives,
masking is idempotent, and text with nothing sensitive passes through unchanged."""

from __future__ import annotations

import json
import random

from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from plugwatch.masking import MaskingEngine
from plugwatch.masking.corpus import SECRET_MAKERS

from masking_helpers import strings_of

# Kinds a detector finds on their own; passwords and opaque tokens need a name, added below.
_BARE = sorted(k for k in SECRET_MAKERS if k not in ("password", "opaque"))
_NAMED = ["password={v}", "api_key: {v}", '"client_secret": "{v}"', "Authorization: Bearer {v}", "token={v}"]

_TEXT = st.text(alphabet="abcdefghijklmnopqrstuvwxyzABCDEFGHIJ0123456789 .,:;-_/()", max_size=30)
_KEYS = st.text(alphabet="abcdefghijklmnopqrstuvwxyz_.", min_size=1, max_size=12)
_SCALARS = st.one_of(st.none(), st.booleans(), st.integers(-10**6, 10**6), st.floats(allow_nan=False, allow_infinity=False), _TEXT)
_TREES = st.recursive(_SCALARS, lambda inner: st.one_of(st.lists(inner, max_size=4), st.dictionaries(_KEYS, inner, max_size=4)),
                      max_leaves=12)

SETTINGS = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@st.composite
def planted_secret(draw) -> tuple[str, str]:
    """(text carrying the secret, the secret itself)."""
    rng = random.Random(draw(st.integers(0, 2**32 - 1)))
    kind = draw(st.sampled_from(_BARE + ["password", "opaque"]))
    secret = SECRET_MAKERS[kind](rng)
    if kind in ("password", "opaque"):
        return draw(st.sampled_from(_NAMED)).format(v=secret), secret
    return secret, secret


def _in_context(engine: MaskingEngine, prefix: str) -> bool:
    """Numbers right after 'order', 'commit', ... stay readable by design."""
    return bool(engine.masker.context.search(prefix.lower().encode()))


@SETTINGS
@given(planted=planted_secret(), prefix=_TEXT, suffix=_TEXT)
def test_secret_in_free_text_never_survives(engine: MaskingEngine, planted, prefix: str, suffix: str) -> None:
    carrier, secret = planted
    assume(not _in_context(engine, prefix + " "))
    masked = engine.mask_text(f"{prefix} {carrier} {suffix}")
    assert secret not in masked


@st.composite
def tree_with_secret(draw, engine: MaskingEngine):
    carrier, secret = draw(planted_secret())
    prefix, suffix = draw(_TEXT), draw(_TEXT)
    assume(not _in_context(engine, prefix + " "))
    leaf: object = draw(st.sampled_from([carrier, f"{prefix} {carrier} {suffix}", json.dumps({"note": carrier})]))
    for _ in range(draw(st.integers(0, 4))):
        if draw(st.booleans()):
            key = draw(_KEYS)
            assume(not engine.rules.is_readable_key(key.encode()))
            siblings = draw(st.dictionaries(_KEYS, _TREES, max_size=3))
            siblings[key] = leaf
            leaf = siblings
        else:
            items = draw(st.lists(_TREES, max_size=3))
            items.insert(draw(st.integers(0, len(items))), leaf)
            leaf = items
    return leaf, secret


@SETTINGS
@given(data=st.data())
def test_secret_anywhere_in_json_never_survives(engine: MaskingEngine, data) -> None:
    tree, secret = data.draw(tree_with_secret(engine))
    masked, stats = engine.mask(tree)
    assert not any(secret in s for s in strings_of(masked)), masked
    assert not any(json.dumps(secret)[1:-1] in s for s in strings_of(masked)), masked
    assert stats.violations == 0


@SETTINGS
@given(data=st.data())
def test_masking_is_idempotent(engine: MaskingEngine, data) -> None:
    tree, _ = data.draw(tree_with_secret(engine))
    once, _ = engine.mask(tree)
    twice, stats = engine.mask(once)
    assert twice == once and not stats.flagged


@SETTINGS
@given(tree=st.recursive(st.one_of(st.none(), st.booleans(), st.integers(-999, 999),
                                   st.text(alphabet="abcdefghijklmnopqrstuvwxyz .,", max_size=40)),
                         lambda inner: st.one_of(st.lists(inner, max_size=4),
                                                 st.dictionaries(st.text(alphabet="abcdefghij", min_size=1, max_size=8), inner, max_size=4)),
                         max_leaves=15))
def test_nothing_sensitive_passes_unchanged(engine: MaskingEngine, tree) -> None:
    masked, stats = engine.mask(tree)
    assert masked == tree and stats.total == 0
