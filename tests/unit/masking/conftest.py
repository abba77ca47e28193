"""Fixtures for the masking engine tests: one compiled engine per session (compiling is the slow part)."""

from __future__ import annotations

import pytest

from plugwatch.masking import MaskingEngine
from plugwatch.masking.scanner import hyperscan

TEST_KEY = b"unit-test-masking-key"


@pytest.fixture(scope="session")
def engine() -> MaskingEngine:
    return MaskingEngine.from_file(hmac_key=TEST_KEY)


@pytest.fixture(scope="session")
def re_engine() -> MaskingEngine:
    """The pure-Python scanner backend (what runs where Hyperscan is not installed)."""
    return MaskingEngine.from_file(hmac_key=TEST_KEY, use_hyperscan=False)


@pytest.fixture(scope="session")
def hs_available() -> bool:
    return hyperscan is not None
