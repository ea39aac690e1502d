"""The report in a real browser: headless Chromium parses it (DOM dump) and renders it (screenshot).

Skipped only when no Chromium binary is installed (``apt-get install -y chromium``).
"""

from __future__ import annotations

import html
import os
import re
import shutil
import struct
import subprocess
from pathlib import Path

import pytest

from rationalign.attribution.words import split_words
from rationalign.report.gates import evaluate_gates, parse_gates
from rationalign.report.html import build_report
from rationalign.report.registry import RunRegistry

from .test_html import ADVERSARIAL_XSS, SECTIONS, add_optional_files

CHROMIUM = next(
    (
        p
        for p in (
            os.environ.get("CHROMIUM"),
            "/usr/bin/chromium",
            shutil.which("chromium"),
            shutil.which("chromium-browser"),
            shutil.which("google-chrome"),
        )
        if p and Path(p).is_file()
    ),
    None,
)
pytestmark = pytest.mark.skipif(CHROMIUM is None, reason="no Chromium binary (apt-get install -y chromium)")
FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


def chromium(profile: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [str(CHROMIUM), *FLAGS, f"--user-data-dir={profile}", *args],
        capture_output=True,
        text=True,
        timeout=90,
        check=False,
    )


def png_size(path: Path) -> tuple[int, int]:
    header = path.read_bytes()[:24]
    assert header[:8] == b"\x89PNG\r\n\x1a\n", "not a PNG"
    return struct.unpack(">II", header[16:24])


@pytest.fixture(scope="module")
def report(tmp_path_factory: pytest.TempPathFactory, report_run) -> Path:
    root = tmp_path_factory.mktemp("browser")
    run_dir = root / "run"
    shutil.copytree(report_run.run_dir, run_dir, ignore=shutil.ignore_patterns("checkpoint"))
    add_optional_files(run_dir)
    registry = RunRegistry(root / "registry.sqlite")
    evaluate_gates(
        run_dir, parse_gates({"min": {"test_accuracy": 0.2}, "max": {"ece": 0.05}}), registry=registry
    )
    return build_report([run_dir], root / "report.html", registry)


def test_dom_has_sections_and_no_injected_elements(report: Path, tmp_path: Path) -> None:
    result = chromium(tmp_path / "profile", "--dump-dom", report.as_uri())
    dom = result.stdout
    assert result.returncode == 0 and "<body" in dom, result.stderr[-2000:]
    for section in SECTIONS:
        assert f'data-section="{section}"' in dom
    assert len(re.findall(r'<section id="run-1-', dom)) == len(SECTIONS)
    # The browser parsed the user text as text: no script or img elements exist in the DOM.
    assert "<script" not in dom and "<img" not in dom
    assert '&lt;img src=x onerror="alert(2)"&gt; top up failed' in dom
    # The adversarial utterance is a heat-map row of word spans; as text it reads back word for word.
    rows = re.findall(r'data-kind="adversarial">.*?<span class="words">(.*?)</span></div>', dom, re.DOTALL)
    shown = [html.unescape(" ".join(re.findall(r'<span class="w"[^>]*>(.*?)</span>', row))) for row in rows]
    assert " ".join(split_words(ADVERSARIAL_XSS)) in shown
    assert dom.count("<svg") >= 2  # reliability diagram + training history at least
    assert len(re.findall(r'class="heat" data-kind="adversarial"', dom)) == 2
    title = re.search(r"<title>(.*?)</title>", dom)
    assert title and title.group(1).startswith("rationalign report")


def test_screenshot_renders(report: Path, tmp_path: Path) -> None:
    shot = tmp_path / "report.png"
    result = chromium(
        tmp_path / "profile", f"--screenshot={shot}", "--window-size=1280,2400", report.as_uri()
    )
    assert shot.is_file(), result.stderr[-2000:]
    assert png_size(shot) == (1280, 2400)
    assert shot.stat().st_size > 50_000  # a blank page compresses to a few KB
    keep = os.environ.get("RATIONALIGN_SCREENSHOT")
    if (
        keep
    ):  # to look at it: RATIONALIGN_SCREENSHOT=/tmp/report.png pytest tests/report/test_report_browser.py
        shutil.copy(shot, keep)
