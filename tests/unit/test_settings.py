"""Settings: env over YAML over defaults, frozen, secrets masked."""

import pytest
from pydantic import ValidationError

from plugwatch.settings import Settings


def test_defaults_point_at_embedded_stack(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    settings = Settings()
    assert settings.broker_url.startswith("kafka://127.0.0.1:")
    assert settings.resolved_clickhouse_dsn.startswith("chdb:///")
    assert settings.topics.logs == "telemetry.logs"


def test_env_overrides_yaml_and_nested(monkeypatch):
    monkeypatch.setenv("PLUGWATCH_BROKER_URL", "kafka://k1:9092;k2:9092")
    monkeypatch.setenv("PLUGWATCH_TOPICS__LOGS", "custom.logs")
    monkeypatch.setenv("PLUGWATCH_CLICKHOUSE_DSN", "http://u:p@ch:8123")
    settings = Settings()
    assert settings.bootstrap_servers == "k1:9092,k2:9092"
    assert settings.topics.logs == "custom.logs"
    assert settings.topics.inbound("logs") == "custom.logs"
    assert settings.resolved_clickhouse_dsn == "http://u:p@ch:8123"


def test_yaml_file_is_read(tmp_path, monkeypatch):
    config = tmp_path / "plugwatch.yaml"
    config.write_text("web_port: 7777\ntopics:\n  deadletter: dl.custom\n")
    monkeypatch.setenv("PLUGWATCH_CONFIG", str(config))
    settings = Settings()
    assert settings.web_port == 7777 and settings.topics.deadletter == "dl.custom"


def test_frozen_and_secret_masked():
    settings = Settings(masking_key="k-123")
    with pytest.raises(ValidationError):
        settings.web_port = 1  # type: ignore[misc]
    assert "k-123" not in str(settings.safe_dump())
    assert settings.masking_key.get_secret_value() == "k-123"


def test_every_topic_is_listed_once():
    names = Settings().topics.all_names()
    assert len(names) == len(set(names)) == 21
    assert "plugin.deadletter" in names and "telemetry.masked.metrics" in names
    assert "plugin.evidence.numbers" not in names  # one partition, created on its own
    assert Settings().topics.compacted() == ["plugin.suspend.state"]


def test_bad_broker_scheme_is_refused():
    with pytest.raises(ValidationError, match="kafka://"):
        Settings(broker_url="http://x:1")
