"""The report's HTML page: values shown, HTML escaped, sections in the asked order, nulls survived."""

import re
from html.parser import HTMLParser

import pytest

from plugwatch.reports.html import SECTIONS, _span_rows, format_epoch_ms, render_report_html, safe_href
from tests.unit.sample_report import T0, TRACE, sample_report

XSS = "<script>alert('pwned')</script>"


def section_order(page: str) -> list[str]:
    return re.findall(r'<section class="section" id="sec-\w+" data-section="(\w+)">', page)


def section(page: str, name: str) -> str:
    found = re.search(rf'data-section="{name}">(.*?)</section>', page, re.DOTALL)
    assert found, f"section {name} not on the page"
    return found.group(1)


class Tags(HTMLParser):
    def __init__(self):
        super().__init__()
        self.tags: list[str] = []
        self.links: list[str] = []

    def handle_starttag(self, tag, attrs):
        self.tags.append(tag)
        if tag == "a":
            self.links.append(dict(attrs).get("href"))


def parse(page: str) -> Tags:
    tags = Tags()
    tags.feed(page)
    return tags


def test_epoch_ms_filter():
    assert format_epoch_ms(T0 + 1_480) == "2026-11-24T09:15:01.480Z"
    assert format_epoch_ms(0) == "1970-01-01T00:00:00.000Z"
    assert format_epoch_ms(None) == "—"
    assert format_epoch_ms("soon") == "soon"
    assert format_epoch_ms(10**30) == str(10**30)


def test_sample_page_shows_its_values():
    page = render_report_html(sample_report())
    title = re.search(r"<title>(.*?)</title>", page).group(1)
    assert "pay-gateway" in title and "ALR-7f3a91" in title and "revision 2" in title
    summary = section(page, "summary")
    for value in ("pay-gateway error rate 38% over 60 s (threshold 5%)", "critical", "error_rate", "tenant-acme",
                  "[MASKED:email]", "2026-11-24T09:15:00.000Z", "2026-11-24T09:16:32.000Z",
                  "2026-11-24T09:16:35.210Z", "1840 ms", "9c1e44b0a7d2f3e1", "incomplete", "82%",
                  "https://tickets.example.test/browse/PLUG-1234"):
        assert value in summary, value
    assert "CardVaultTimeout" in section(page, "stack_traces") and "57×" in section(page, "stack_traces")
    assert "&#34;[MASKED:card_number]&#34;" in section(page, "requests")  # body as pretty JSON, escaped
    assert "&#34;amount&#34;: 500" in section(page, "requests")  # a JSON string body is unfolded
    assert "2080.5" in section(page, "metrics") and "{connections}" in section(page, "metrics")
    skew = section(page, "clock_skew")
    assert "-1200 ms" in skew and "87%" in skew and "143" in skew
    timeline = section(page, "timeline")
    assert "2026-11-24T09:16:29.420Z" in timeline and "2026-11-24T09:16:30.620Z" in timeline
    assert "-1200 ms" in timeline and TRACE in timeline
    assert timeline.count('class="lvl-error"') == 2 and timeline.count('class="lvl-warn"') == 1
    assert "1210 more left out" in timeline
    assert "<pre>" in section(page, "stack_traces")


def test_incomplete_report_is_flagged_at_the_top_with_its_export():
    page = render_report_html(sample_report())
    banner = re.search(r'<section class="incomplete".*?</section>', page, re.DOTALL).group(0)
    assert page.index(banner) < page.index('data-section="summary"')
    for value in ("Incomplete report", "82%", "fallback", "card-vault-2", "worker restarted", "timeline 1210",
                  "/internal/debug/exports/", "2026-11-25T09:15:00.000Z"):
        assert value in banner, value


def test_complete_report_has_no_banner():
    report = sample_report()
    report["completeness"] = {"coverage": 1.0, "fallback_used": False, "missing_sources": [], "complete": True,
                              "notes": [], "truncated": {}}
    page = render_report_html(report)
    assert 'class="incomplete"' not in page and "complete</span>" in page


@pytest.mark.parametrize(
    "place",
    [
        lambda r, v: r["timeline"][0].__setitem__("message", v),
        lambda r, v: r["stack_traces"][0].__setitem__("stacktrace", v),
        lambda r, v: r["stack_traces"][0].__setitem__("type", v),
        lambda r, v: r["requests"][0]["headers"].__setitem__("x-evil", v),
        lambda r, v: r["requests"][0].__setitem__("body", v),
        lambda r, v: r["requests"][0].__setitem__("url", v),
        lambda r, v: r["traces"][0]["spans"][1].__setitem__("name", v),
        lambda r, v: r["environment"]["feature_flags"].__setitem__(v, v),
        lambda r, v: r["metrics"].__setitem__(v, {"unit": v}),
        lambda r, v: r["alert"].__setitem__("summary", v),
        lambda r, v: r.__setitem__("plugin_id", v),
        lambda r, v: r["completeness"]["notes"].append(v),
        lambda r, v: r["clock_skew"][0].__setitem__("source", v),
    ],
)
def test_html_in_values_is_escaped(place):
    report = sample_report()
    place(report, XSS)
    page = render_report_html(report)
    assert "<script" not in page.lower()
    assert "&lt;script&gt;" in page
    assert "script" not in parse(page).tags


def test_only_http_and_relative_links_are_clickable():
    report = sample_report()
    report["links"]["ticket_url"] = "javascript:alert(1)"
    report["links"]["report_url"] = "//evil.example/x"
    page = render_report_html(report)
    assert not any(h and ("javascript" in h or h.startswith("//")) for h in parse(page).links)
    assert "javascript:alert(1)" in page  # still shown, as text
    assert safe_href("https://a.test/x") == "https://a.test/x" and safe_href("/internal/x") == "/internal/x"
    assert safe_href("data:text/html,x") is None and safe_href(None) is None


def test_page_needs_no_scripts_or_external_resources():
    page = render_report_html(sample_report())
    tags = parse(page).tags
    assert "script" not in tags and "img" not in tags and "link" not in tags and "iframe" not in tags
    assert "Content-Security-Policy" in page and " src=" not in page
    report_links = {v for v in sample_report()["links"].values() if isinstance(v, str)}
    assert all(href.startswith("#") or href in report_links for href in parse(page).links)


def test_default_section_order():
    assert section_order(render_report_html(sample_report())) == list(SECTIONS)


def test_sections_in_the_order_asked():
    order = ["timeline", "summary", "clock_skew", "stack_traces"]
    page = render_report_html(sample_report(), sections=order)
    assert section_order(page) == order
    assert "Feature flag" not in page  # environment was not asked for
    nav = re.search(r"<nav>(.*?)</nav>", page, re.DOTALL).group(1)
    assert re.findall(r'href="#sec-(\w+)"', nav) == order


def test_unknown_section_refused():
    with pytest.raises(ValueError, match="unknown report section"):
        render_report_html(sample_report(), sections=["summary", "gossip"])


@pytest.mark.parametrize("name", [n for n in SECTIONS if n != "summary"])
@pytest.mark.parametrize("empty", [None, "missing", "empty"])
def test_missing_or_empty_section_says_none(name, empty):
    report = sample_report()
    if empty == "missing":
        del report[name]
    elif empty is None:
        report[name] = None
    else:
        report[name] = {} if isinstance(report[name], dict) else []
    assert "None in this window." in section(render_report_html(report), name)


def test_environment_without_values_says_none():
    report = sample_report()
    report["environment"] = {"plugin_versions": [], "instances": [], "feature_flags": {}}
    assert "None in this window." in section(render_report_html(report), "environment")


def paths(value, prefix=()):
    yield prefix
    if isinstance(value, dict):
        for key, child in value.items():
            yield from paths(child, (*prefix, key))
    elif isinstance(value, list):
        for index, child in enumerate(value):
            yield from paths(child, (*prefix, index))


@pytest.mark.parametrize("replacement", [None, "x", 7, [], {}])
def test_any_field_null_or_wrong_type_still_renders(replacement):
    for path in list(paths(sample_report()))[1:]:
        report = sample_report()
        target = report
        for step in path[:-1]:
            target = target[step]
        target[path[-1]] = replacement
        page = render_report_html(report)
        assert page.startswith("<!DOCTYPE html>") and page.rstrip().endswith("</html>"), path


def test_empty_and_null_reports_render():
    for report in ({}, None, {"schema": "plugwatch.debug.report/1"}):
        page = render_report_html(report)
        assert section_order(page) == list(SECTIONS)
        assert "Completeness not recorded" in page


def test_spans_nest_under_their_parents():
    rows = _span_rows(sample_report()["traces"][0]["spans"])
    assert [(depth, s["span_id"]) for depth, s in rows] == [(0, "a1"), (1, "b2"), (2, "c3"), (1, "d4")]
    page = section(render_report_html(sample_report()), "traces")
    assert page.index(">vault.lookup<") > page.index(">charge<") > page.index(">POST /v1/charges<")
    assert 'style="padding-left: 3.0em"' in page


def test_orphan_and_cyclic_spans_are_still_listed():
    spans = [
        {"span_id": "x", "parent_span_id": "y", "start_ts": 2},
        {"span_id": "y", "parent_span_id": "x", "start_ts": 1},
        {"span_id": "o", "parent_span_id": "gone", "start_ts": 3},
        {"span_id": "s", "parent_span_id": "s"},
        "not a span",
    ]
    assert sorted(s["span_id"] for _, s in _span_rows(spans)) == ["o", "s", "x", "y"]
