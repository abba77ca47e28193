"""Masking engine: every sensitive value masked inline, verified after masking.

Pure domain logic (no Faust, Kafka, HTTP or ClickHouse imports). Rules come from
config/security/data_masking_rules.yaml; see ``MaskingEngine`` for the API and DESIGN §4 for the
contract.
"""

from plugwatch.masking.engine import DEV_KEY, KEY_ENV, MaskingEngine, load_engine
from plugwatch.masking.logfilter import MaskingFilter
from plugwatch.masking.rules import Rules, RulesError, load_rules
from plugwatch.masking.stats import MaskStats

__all__ = ["DEV_KEY", "KEY_ENV", "MaskStats", "MaskingEngine", "MaskingFilter", "Rules", "RulesError", "load_engine", "load_rules"]
