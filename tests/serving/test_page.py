"""The web page in a real headless Chromium against a real server: type, click, read the DOM, screenshot.

Chromium is driven over the DevTools protocol (``--remote-debugging-port`` + a websocket). Set
``RATIONALIGN_SCREENSHOTS=<folder>`` to keep the screenshots.
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import shutil
import signal
import struct
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from rationalign.attribution.words import split_words
from rationalign.data.types import LabelSpace
from rationalign.models.classifier import IntentClassifier
from rationalign.serving.app import background_server, create_app

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser") or "/usr/bin/chromium"
pytestmark = [
    pytest.mark.skipif(
        not Path(CHROMIUM).exists(),
        reason="chromium is not installed (apt-get install -y chromium; .ci/run installs it)",
    ),
    pytest.mark.filterwarnings("ignore::DeprecationWarning"),
]
websockets_sync = pytest.importorskip("websockets.sync.client", reason="websockets is not installed")

TEXT = "I still haven't received my new card, where is it?"


class DevTools:
    """The smallest useful DevTools-protocol client: numbered commands, events kept for inspection."""

    def __init__(self, ws_url: str):
        self.ws = websockets_sync.connect(ws_url, max_size=64 * 2**20, open_timeout=10)
        self.next_id = 0
        self.events: list[dict] = []

    def send(self, method: str, timeout_s: float = 15.0, **params) -> dict:
        self.next_id += 1
        self.ws.send(json.dumps({"id": self.next_id, "method": method, "params": params}))
        deadline = time.monotonic() + timeout_s
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError(f"no answer to {method} in {timeout_s} s")
            message = json.loads(self.ws.recv(timeout=remaining))
            if message.get("id") == self.next_id:
                if "error" in message:
                    raise RuntimeError(f"{method}: {message['error']}")
                return message.get("result", {})
            self.events.append(message)

    def evaluate(self, expression: str):
        result = self.send("Runtime.evaluate", expression=expression, returnByValue=True, awaitPromise=True)
        if "exceptionDetails" in result:
            raise RuntimeError(f"page script failed: {result['exceptionDetails']}")
        return result["result"].get("value")

    def wait_for(self, expression: str, timeout_s: float = 20.0):
        deadline = time.monotonic() + timeout_s
        # During navigation the old document (or none) answers: "not there yet" is not a failure.
        guarded = f"(() => {{ try {{ return ({expression}); }} catch (err) {{ return false; }} }})()"
        while time.monotonic() < deadline:
            value = self.evaluate(guarded)
            if value:
                return value
            time.sleep(0.05)
        raise TimeoutError(f"page never satisfied: {expression}")

    def close(self) -> None:
        self.ws.close()


@contextlib.contextmanager
def chromium(profile: Path) -> Iterator[DevTools]:
    args = [
        CHROMIUM,
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--disable-dev-shm-usage",
        f"--user-data-dir={profile}",
        "--remote-debugging-address=127.0.0.1",
        "--remote-debugging-port=0",  # Chromium picks a free port and writes it to DevToolsActivePort
        "--window-size=1100,900",
        "about:blank",
    ]
    proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True)
    client = None
    try:
        port_file = profile / "DevToolsActivePort"
        deadline = time.monotonic() + 30
        while not (port_file.is_file() and port_file.read_text().strip()):
            if proc.poll() is not None:
                raise RuntimeError(f"chromium exited: {proc.stderr.read().decode(errors='replace')[-2000:]}")
            if time.monotonic() > deadline:
                raise TimeoutError("chromium did not open its DevTools port within 30 s")
            time.sleep(0.05)
        port = int(port_file.read_text().split()[0])
        targets = httpx.get(f"http://127.0.0.1:{port}/json/list", timeout=10).json()
        page = next(t for t in targets if t["type"] == "page")
        client = DevTools(page["webSocketDebuggerUrl"])
        yield client
    finally:
        if client is not None:
            client.close()
        # Our own Chromium only: its process group (start_new_session), by id.
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=10)


def png_size(data: bytes) -> tuple[int, int]:
    assert data[:8] == b"\x89PNG\r\n\x1a\n", "not a PNG"
    return struct.unpack(">II", data[16:24])


def save_screenshot(tools: DevTools, path: Path) -> bytes:
    data = base64.b64decode(tools.send("Page.captureScreenshot", format="png")["data"])
    path.write_bytes(data)
    keep = os.environ.get("RATIONALIGN_SCREENSHOTS")
    if keep:
        Path(keep).mkdir(parents=True, exist_ok=True)
        shutil.copy(path, Path(keep) / path.name)
    return data


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    labels = ["card_arrival", "card_linking", "exchange_rate", "lost_or_stolen_card", "top_up_failed"]
    clf = IntentClassifier.tiny(LabelSpace(labels), arch="bert", seed=0)
    folder = clf.save(tmp_path_factory.mktemp("page") / "demo-model")
    with background_server(create_app(folder)) as url:
        yield url


READ_RESULT = """(() => ({
  label: document.getElementById('label').textContent,
  gauge: document.getElementById('gauge-value').textContent,
  probability: Number(document.getElementById('gauge').dataset.probability),
  topk: [...document.querySelectorAll('#topk li')].length,
  words: [...document.querySelectorAll('#heatmap .word')].map(s => [s.textContent, Number(s.dataset.weight)]),
  heatmapText: document.getElementById('heatmap').textContent,
  colours: [...document.querySelectorAll('#heatmap .word')].map(s => getComputedStyle(s).backgroundColor),
  hidden: document.getElementById('result').hidden,
}))()"""


def test_page_types_classifies_and_shows_the_heatmap(server, tmp_path):
    expected = httpx.post(f"{server}/predict", json={"texts": [TEXT]}, timeout=10).json()["predictions"][0]
    with chromium(tmp_path / "profile") as tools:
        tools.send("Network.enable")
        tools.send("Page.enable")
        tools.send(
            "Emulation.setDeviceMetricsOverride", width=1100, height=900, deviceScaleFactor=1, mobile=False
        )
        tools.send("Page.navigate", url=f"{server}/")
        tools.wait_for(
            "document.readyState === 'complete' && "
            "!document.getElementById('model-info').textContent.includes('connecting')"
        )
        assert "5 intents" in tools.evaluate("document.getElementById('model-info').textContent")
        # Type like a user: focus the box, insert the text, click the button where it is drawn.
        tools.evaluate("document.getElementById('text').focus()")
        tools.send("Input.insertText", text=TEXT)
        x, y = tools.evaluate(
            "(() => { const r = document.getElementById('submit').getBoundingClientRect();"
            " return [r.x + r.width / 2, r.y + r.height / 2]; })()"
        )
        for kind in ("mousePressed", "mouseReleased"):
            tools.send("Input.dispatchMouseEvent", type=kind, x=x, y=y, button="left", clickCount=1)
        state = tools.wait_for(
            "['done', 'error'].includes(document.getElementById('status').dataset.state) && "
            "document.getElementById('status').dataset.state"
        )
        assert state == "done", tools.evaluate("document.getElementById('status').textContent")
        result = tools.evaluate(READ_RESULT)
        shot = save_screenshot(tools, tmp_path / "page.png")
        requested = [
            e["params"]["request"]["url"]
            for e in tools.events
            if e.get("method") == "Network.requestWillBeSent"
        ]
    assert result["hidden"] is False
    assert result["label"] == expected["label"]
    assert result["probability"] == pytest.approx(expected["probability"], abs=1e-9)
    assert result["gauge"] == f"{round(expected['probability'] * 1000) / 10:g}%"
    assert result["topk"] == 5
    assert [w for w, _ in result["words"]] == split_words(TEXT)
    assert max(abs(weight) for _, weight in result["words"]) == pytest.approx(1.0)
    assert result["heatmapText"] == TEXT  # words re-inserted with the original spacing
    assert len(set(result["colours"])) > 1  # a heat-map, not one colour
    # Self-contained: every request the page made went to our server.
    assert requested and all(u.startswith(server) for u in requested), requested
    assert {"/predict", "/explain", "/health"} <= {u[len(server) :] for u in requested}
    width, height = png_size(shot)
    assert (width, height) == (1100, 900) and len(shot) > 20_000


def test_page_auto_submits_a_query_and_reports_errors(server, tmp_path):
    with chromium(tmp_path / "profile") as tools:
        tools.send("Page.enable")
        tools.send("Page.navigate", url=f"{server}/?q=top%20up%20failed%20again")
        tools.wait_for("document.getElementById('status').dataset.state === 'done'")
        assert tools.evaluate("document.getElementById('text').value") == "top up failed again"
        words = tools.evaluate("[...document.querySelectorAll('#heatmap .word')].map(s => s.textContent)")
        assert words == ["top", "up", "failed", "again"]
        # Too long for the server's limit: the page says so instead of sending it.
        tools.evaluate("document.getElementById('text').removeAttribute('maxlength')")
        tools.evaluate("document.getElementById('text').value = 'x'.repeat(1001)")
        tools.evaluate("document.getElementById('submit').click()")
        tools.wait_for("document.getElementById('status').dataset.state === 'error'")
        assert "at most 1000" in tools.evaluate("document.getElementById('status').textContent")
        # Past the page's own check, the server's 413 reaches the user as a message.
        tools.evaluate("state.maxChars = 5000; document.getElementById('submit').click()")
        message = tools.wait_for(
            "document.getElementById('status').dataset.state === 'error' && "
            "document.getElementById('status').textContent.includes('413') && "
            "document.getElementById('status').textContent"
        )
        assert "1001 characters" in message
        save_screenshot(tools, tmp_path / "page-error.png")
