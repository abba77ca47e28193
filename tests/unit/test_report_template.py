"""The report template file: the shipped one loads, mistakes are refused with the file and key named."""

from pathlib import Path

import pydantic
import pytest

from plugwatch.reports.template import SECTIONS, ReportTemplate, TemplateError, load_template

SHIPPED = Path(__file__).resolve().parents[2] / "config" / "plugins" / "debug" / "report_template.yaml"


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "report_template.yaml"
    path.write_text(text)
    return path


def refused(tmp_path: Path, text: str) -> str:
    path = write(tmp_path, text)
    with pytest.raises(TemplateError) as caught:
        load_template(path)
    message = str(caught.value)
    assert str(path) in message
    return message


def test_shipped_template_equals_the_default():
    assert load_template(SHIPPED) == ReportTemplate.default()


def test_default_values():
    template = ReportTemplate.default()
    assert template.version == 1
    assert template.window_s == 300
    assert template.sections == SECTIONS
    assert template.sections[0] == "summary" and template.sections[-1] == "clock_skew"
    assert template.ordering.stack_traces == "count_desc"
    assert template.ordering.requests == "failing_first"
    assert template.ordering.metrics == "name"
    assert all(value > 0 for value in template.limits.model_dump().values())


def test_keys_left_out_take_the_defaults(tmp_path):
    template = load_template(write(tmp_path, "window_s: 60\nlimits:\n  requests: 3\n"))
    assert template.window_s == 60
    assert template.limits.requests == 3
    assert template.limits.timeline == ReportTemplate.default().limits.timeline
    assert template.sections == SECTIONS


def test_empty_file_is_the_default(tmp_path):
    assert load_template(write(tmp_path, "")) == ReportTemplate.default()


def test_sections_keep_the_files_order(tmp_path):
    template = load_template(write(tmp_path, "sections: [timeline, summary]\n"))
    assert template.sections == ("timeline", "summary")
    assert template.includes("timeline") and not template.includes("requests")


def test_template_is_frozen():
    with pytest.raises(pydantic.ValidationError):
        ReportTemplate.default().window_s = 10  # type: ignore[misc]


def test_missing_file(tmp_path):
    path = tmp_path / "nope.yaml"
    with pytest.raises(TemplateError, match="nope.yaml"):
        load_template(path)


def test_invalid_yaml(tmp_path):
    assert "not valid YAML" in refused(tmp_path, "sections: [summary\n")


def test_not_a_mapping(tmp_path):
    assert "must be a mapping" in refused(tmp_path, "- summary\n- timeline\n")


def test_unknown_top_level_key(tmp_path):
    message = refused(tmp_path, "windows_s: 300\n")
    assert "windows_s: unknown key" in message
    assert "window_s" in message  # the known keys are listed


def test_unknown_limit_key(tmp_path):
    message = refused(tmp_path, "limits:\n  max_requests: 5\n")
    assert "limits.max_requests: unknown key" in message
    assert "requests" in message


def test_unknown_section(tmp_path):
    message = refused(tmp_path, "sections: [summary, stacktraces]\n")
    assert "sections.1" in message and "'stacktraces'" in message


def test_repeated_section(tmp_path):
    assert "repeated: timeline" in refused(tmp_path, "sections: [timeline, summary, timeline]\n")


def test_no_sections(tmp_path):
    assert "at least one section" in refused(tmp_path, "sections: []\n")


@pytest.mark.parametrize("key, value", [
    ("stack_traces", "newest"), ("requests", "count_desc"), ("metrics", "value"),
])
def test_unknown_ordering(tmp_path, key, value):
    message = refused(tmp_path, f"ordering:\n  {key}: {value}\n")
    assert f"ordering.{key}" in message and repr(value) in message


def test_timeline_ordering_is_not_a_setting(tmp_path):
    assert "ordering.timeline: unknown key" in refused(tmp_path, "ordering:\n  timeline: newest_first\n")


@pytest.mark.parametrize("value", ["0", "-5", "true", "'10'", "2.5"])
def test_limits_must_be_positive_integers(tmp_path, value):
    assert "limits.requests" in refused(tmp_path, f"limits:\n  requests: {value}\n")


@pytest.mark.parametrize("value", ["0", "86401", "'300'"])
def test_window_must_be_positive_and_at_most_a_day(tmp_path, value):
    assert "window_s" in refused(tmp_path, f"window_s: {value}\n")


def test_unknown_version(tmp_path):
    assert "version" in refused(tmp_path, "version: 2\n")


def test_template_error_is_a_value_error():
    assert issubclass(TemplateError, ValueError)
