"""The report page in a real browser (headless Chromium): it renders, and nothing on it fails.

The first test proves the error collection works, so that "no errors" on the report page means
something. Without Debian's chromium these tests fail (``tests/browser.py``), they are never skipped.
"""

from pathlib import Path

from plugwatch.reports.html import SECTIONS, render_report_html
from tests.browser import console_errors, render_in_chromium
from tests.unit.sample_report import sample_report

BROKEN = """<!DOCTYPE html>
<html><head><title>broken on purpose</title>
<link rel="stylesheet" href="missing-style.css">
</head><body>
<p id="state">before</p>
<img src="missing-picture.png" alt="">
<script>console.log("just information"); console.warn("only a warning");</script>
<script>console.error("deliberate console error", 42);</script>
<script>throw new TypeError("deliberate throw");</script>
<script>Promise.reject(new Error("deliberate rejection"));</script>
<script>document.getElementById("state").textContent = "scripts ran";</script>
</body></html>
"""


def test_errors_in_a_page_are_caught(tmp_path: Path):
    page = tmp_path / "broken.html"
    page.write_text(BROKEN)
    result = render_in_chromium(page)
    assert result.exit_code == 0, result.stderr[-2000:]
    assert '<p id="state">scripts ran</p>' in result.dom
    assert "plugwatch-probe" not in result.dom  # the probe removed itself
    errors = "\n".join(result.console_errors)
    assert "console.error: deliberate console error 42" in errors
    assert "Uncaught TypeError: deliberate throw" in errors
    assert "Uncaught (in promise) Error: deliberate rejection" in errors
    assert f"failed to load <img> {(tmp_path / 'missing-picture.png').as_uri()}" in errors
    assert f"failed to load <link> {(tmp_path / 'missing-style.css').as_uri()}" in errors
    assert "just information" not in errors and "only a warning" not in errors
    assert len(result.console_errors) == 5, result.console_errors


def test_external_resources_are_blocked_and_reported_on_the_report_page():
    html = render_report_html(sample_report()).replace(
        "<footer>", '<img src="https://example.invalid/beacon.png"><script>document.title = "ran"</script><footer>'
    )
    result = render_in_chromium(html)
    errors = "\n".join(result.console_errors)
    assert "Content Security Policy" in errors and "beacon.png" in errors and "inline script" in errors
    assert "<title>ran</title>" not in result.dom


def test_sample_report_renders_clean():
    report = sample_report()
    report["timeline"][0]["message"] = "<script>document.title = 'pwned'</script><img src=x onerror=alert(1)>"
    result = render_in_chromium(render_report_html(report))
    assert result.exit_code == 0, result.stderr[-2000:]
    assert result.console_errors == []
    assert "pwned" not in result.dom.split("</title>")[0]
    assert "&lt;script&gt;document.title = 'pwned'&lt;/script&gt;" in result.dom
    for name in SECTIONS:
        assert f'data-section="{name}"' in result.dom
    assert "CardVaultTimeout" in result.dom and "2026-11-24T09:15:31.120Z" in result.dom
    assert "Incomplete report" in result.dom


def test_missing_chromium_fails_with_the_install_hint(monkeypatch, tmp_path: Path):
    monkeypatch.setenv("PATH", str(tmp_path))
    try:
        render_in_chromium("<p>hi</p>")
    except AssertionError as exc:
        assert "apt-get install chromium" in str(exc)
    else:
        raise AssertionError("render_in_chromium did not fail without chromium")


def test_console_lines_are_parsed_from_stderr():
    stderr = (
        '[1:1:1124/082137.057819:INFO:CONSOLE:3] "[plugwatch-probe] console.error: boom", '
        "source: file:///p.html (3)\n"
        "[1:1:1124/082137.057820:INFO:CONSOLE:4] \"plain log\", source: file:///p.html (4)\n"
        "[1:1:1124/082137.062928:INFO:CONSOLE:5] \"Uncaught Error: two\nlines\", source: file:///p.html (5)\n"
        "[1:2:1124/082136.513906:ERROR:dbus/bus.cc:405] Failed to connect to the bus\n"
    )
    assert console_errors(stderr) == [
        "console.error: boom (file:///p.html:3)",
        "Uncaught Error: two\nlines (file:///p.html:5)",
    ]
