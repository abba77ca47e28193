"""Render a page in headless Chromium (Debian's ``chromium``) and collect what went wrong in it.

``chromium --dump-dom`` prints the DOM after the load event on stdout, and with
``--enable-logging=stderr`` every console message on stderr as
``[pid:tid:MMDD/HHMMSS.micro:INFO:CONSOLE:<line>] "<message>", source: <url> (<line>)``, all at INFO
whatever the console level, while a failed image or stylesheet load is not logged at all. So before
rendering, a small probe script is put at the top of ``<head>``: it prefixes ``console.error`` output
and reports failed resource loads (error events seen in the capture phase) with a marker, then removes
itself from the DOM. Uncaught exceptions and rejections are logged by Chromium itself as
``"Uncaught ..."``, Content-Security-Policy blocks as ``"... violates the following Content Security
Policy directive ..."``.

Chromium missing is a failure, not a skip: a browser check that silently does not run is a false green.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

INSTALL_HINT = "install Debian's chromium package: apt-get install chromium"
MARK = "[plugwatch-probe] "

FLAGS = (
    "--headless",
    "--no-sandbox",  # CI runs as root, where Chromium's sandbox refuses to start
    "--disable-gpu",
    "--disable-dev-shm-usage",
    "--enable-logging=stderr",
    "--v=0",
    "--no-first-run",
    "--no-default-browser-check",
    "--disable-extensions",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-default-apps",
    "--mute-audio",
)

PROBE = (
    "<script>(function () {"
    f"var mark = {MARK!r}, error = console.error;"
    "console.error = function () {"
    "  error.call(console, mark + 'console.error: ' + Array.prototype.map.call(arguments, String).join(' '));"
    "};"
    "window.addEventListener('error', function (event) {"
    "  var t = event.target;"
    "  if (t && t !== window && t.tagName) {"
    "    var url = t.currentSrc || t.src || t.href || '';"
    "    error.call(console, mark + 'failed to load <' + t.tagName.toLowerCase() + '> ' + url);"
    "  }"
    "}, true);"
    "document.currentScript.remove();"
    "})();</script>"
)

_CONSOLE = re.compile(
    r'^\[[^\]\n]*:INFO:CONSOLE[^\]\n]*\] "(?P<message>.*?)", source: (?P<source>.*?) \((?P<line>\d+)\)$',
    re.MULTILINE | re.DOTALL,
)
_ERROR_PREFIXES = ("Uncaught", "Refused to", "Failed to load resource")
_ANCHORS = tuple(re.compile(tag, re.IGNORECASE) for tag in (r"<head\b[^>]*>", r"<html\b[^>]*>", r"<!doctype[^>]*>"))


@dataclass
class RenderResult:
    dom: str
    console_errors: list[str]
    exit_code: int
    stderr: str = field(default="", repr=False)


def chromium_binary() -> str:
    binary = shutil.which("chromium")
    if binary is None:
        raise AssertionError(f"chromium not found on PATH: {INSTALL_HINT}")
    return binary


def render_in_chromium(html: str | Path, *, timeout: float = 60) -> RenderResult:
    """Load ``html`` (a page's text, or a file) in headless Chromium; the DOM after load and its errors.

    A file is rendered from an instrumented copy beside it, so its relative links resolve as before.
    """
    binary = chromium_binary()
    if isinstance(html, Path):
        text, directory = html.read_text(encoding="utf-8"), html.resolve().parent
    else:
        text, directory = html, None
    with tempfile.TemporaryDirectory(prefix="pw-chromium-") as tmp:
        page = Path(tempfile.mkstemp(prefix=".render-", suffix=".html", dir=directory or tmp)[1])
        try:
            page.write_text(with_probe(text), encoding="utf-8")
            return _run(binary, page, Path(tmp), timeout)
        finally:
            page.unlink(missing_ok=True)


def with_probe(text: str) -> str:
    """``text`` with the probe as the first thing the parser runs (before any CSP meta tag)."""
    for anchor in _ANCHORS:
        found = anchor.search(text)
        if found:
            return text[: found.end()] + PROBE + text[found.end() :]
    return PROBE + text


def console_errors(stderr: str) -> list[str]:
    """The error-level console messages in Chromium's stderr, as ``message (source:line)``."""
    errors = []
    for found in _CONSOLE.finditer(stderr):
        message = found["message"]
        if message.startswith(MARK):
            message = message.removeprefix(MARK)
        elif not message.startswith(_ERROR_PREFIXES) and "Content Security Policy" not in message:
            continue  # console.log / info / warn
        errors.append(f"{message} ({found['source']}:{found['line']})")
    return errors


def _run(binary: str, page: Path, tmp: Path, timeout: float) -> RenderResult:
    profile = tmp / "profile"
    # keep Chromium's config, cache and crash dumps out of the real home directory
    env = {**os.environ, "HOME": str(tmp), "XDG_CONFIG_HOME": str(tmp / "config"), "XDG_CACHE_HOME": str(tmp / "cache")}
    command = [binary, *FLAGS, f"--user-data-dir={profile}", "--dump-dom", page.as_uri()]
    process = subprocess.Popen(
        command,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        stdin=subprocess.DEVNULL,
        env=env,
        start_new_session=True,  # its own process group, so a hung render is ended with all its children
    )
    try:
        out, err = process.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.communicate()
        raise AssertionError(f"chromium did not render {page.name} within {timeout} s") from None
    stderr = err.decode("utf-8", "replace")
    return RenderResult(out.decode("utf-8", "replace"), console_errors(stderr), process.returncode, stderr)
