"""The FastAPI app: predictions, explanations, limits and error codes, a real uvicorn server, the CLI."""

from __future__ import annotations

import json
import threading
import time
import warnings
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import numpy as np
import pytest
import typer
from prometheus_client.parser import text_string_to_metric_families
from typer.testing import CliRunner

from rationalign.attribution.gradient import GradientXInput
from rationalign.attribution.words import join_words, split_words
from rationalign.data.types import LabelSpace
from rationalign.errors import ConfigError, ModelError, RationalignError
from rationalign.models.classifier import IntentClassifier
from rationalign.serving.app import background_server, create_app
from rationalign.serving.commands import register

with warnings.catch_warnings():
    warnings.simplefilter("ignore")  # starlette's note about httpx vs httpx2
    from fastapi.testclient import TestClient

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")

LABELS = ["alarm_query", "alarm_set", "card_activate", "card_block", "exchange_rate"]
TEXTS = [
    "block my card please",
    "what alarms do i have tomorrow?",
    "set an alarm for 7",
    "How do I activate my new card, it arrived today",
    "exchange rate",
    "hi",
]
TEMPERATURE = 1.7


def reference_probs(clf: IntentClassifier, texts: list[str]) -> np.ndarray:
    logits = clf.logits(texts).double()
    return (logits / clf.temperature).softmax(-1).numpy()


@pytest.fixture(scope="module")
def model(tmp_path_factory) -> tuple[Path, IntentClassifier]:
    """A tiny random BERT with a fitted-looking temperature and an abstain threshold between its answers."""
    clf = IntentClassifier.tiny(LabelSpace(LABELS), arch="bert", seed=3)
    clf.model.eval()
    clf.temperature = TEMPERATURE
    top = reference_probs(clf, TEXTS).max(1)
    clf.abstain_threshold = float(np.median(top))  # some texts above, some below
    folder = clf.save(tmp_path_factory.mktemp("serve") / "tiny-model")
    return folder, IntentClassifier.load(folder)


@pytest.fixture(scope="module")
def client(model):
    with TestClient(create_app(model[0])) as c:
        yield c


# ---------------------------------------------------------------------------------------------- predict
def test_predict_returns_calibrated_probabilities_top_k_and_abstain(client, model):
    _, clf = model
    r = client.post("/predict", json={"texts": TEXTS, "top_k": 3})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["backend"] == "torch" and body["model"] == "tiny-model"
    assert body["batch_size"] >= len(TEXTS) and body["latency_ms"] > 0
    probs = reference_probs(clf, TEXTS)
    abstains = []
    for pred, row in zip(body["predictions"], probs, strict=True):
        best = int(row.argmax())
        assert pred["label"] == LABELS[best]
        assert pred["probability"] == pytest.approx(row[best], abs=1e-6)
        assert [t["label"] for t in pred["top_k"]] == [LABELS[i] for i in np.argsort(-row)[:3]]
        assert [t["probability"] for t in pred["top_k"]] == pytest.approx(np.sort(row)[::-1][:3], abs=1e-6)
        assert pred["abstain"] == (row[best] < clf.abstain_threshold)
        abstains.append(pred["abstain"])
        assert pred["latency_ms"] > 0
    assert any(abstains) and not all(abstains)


def test_temperature_really_changes_the_probabilities(client, model):
    _, clf = model
    r = client.post("/predict", json={"texts": ["block my card please"], "top_k": 5})
    served = max(t["probability"] for t in r.json()["predictions"][0]["top_k"])
    uncalibrated = clf.logits(["block my card please"]).softmax(-1).max().item()
    assert served != pytest.approx(uncalibrated, abs=1e-6)


def test_top_k_is_capped_at_the_number_of_labels(client):
    r = client.post("/predict", json={"texts": ["hello"], "top_k": 100})
    assert r.status_code == 200
    top = r.json()["predictions"][0]["top_k"]
    assert len(top) == len(LABELS)
    assert sum(t["probability"] for t in top) == pytest.approx(1.0, abs=1e-6)


# ---------------------------------------------------------------------------------------------- explain
def test_explain_heatmap_matches_gradient_x_input(client, model):
    _, clf = model
    text = "I lost my card yesterday, block it!"
    r = client.post("/explain", json={"text": text, "detail": "heatmap"})
    assert r.status_code == 200, r.text
    body = r.json()
    predicted = int(reference_probs(clf, [text])[0].argmax())
    assert body["label"] == body["target"] == LABELS[predicted]
    reference = GradientXInput(clf).attribute([text], [predicted])[0]
    assert [w["word"] for w in body["words"]] == split_words(text) == reference.words
    assert [w["index"] for w in body["words"]] == list(range(len(reference.words)))
    np.testing.assert_allclose([w["score"] for w in body["words"]], reference.scores, rtol=1e-4, atol=1e-7)
    weights = np.array([w["weight"] for w in body["words"]])
    assert np.abs(weights).max() == pytest.approx(1.0)
    np.testing.assert_allclose(weights, reference.scores / np.abs(reference.scores).max(), atol=1e-9)


def test_explain_top_k_lists_the_best_words_first(client):
    text = "please set an alarm for seven tomorrow morning"
    heat = client.post("/explain", json={"text": text, "detail": "heatmap"}).json()["words"]
    r = client.post("/explain", json={"text": text, "detail": "top_k", "k": 3})
    assert r.status_code == 200
    top = r.json()["words"]
    assert [w["index"] for w in top] == [w["index"] for w in sorted(heat, key=lambda w: -w["score"])[:3]]
    assert r.json()["counterfactual"] is None


def test_explain_counterfactual_deletes_and_keeps_the_rationale(client, model):
    _, clf = model
    text = "How do I activate my new card, it arrived today"
    r = client.post("/explain", json={"text": text, "detail": "counterfactual", "k": 2})
    assert r.status_code == 200, r.text
    body = r.json()
    top = body["words"]
    assert len(top) == 2
    removed = {w["index"] for w in top}
    words = split_words(text)
    cf = body["counterfactual"]
    assert sorted(cf["removed"]) == sorted(w["word"] for w in top)
    without = join_words([w for i, w in enumerate(words) if i not in removed])
    only = join_words([w for i, w in enumerate(words) if i in removed])
    assert cf["without_rationale"]["text"] == without
    assert cf["rationale_only"]["text"] == only
    probs = reference_probs(clf, [text, without, only])
    target = LABELS.index(body["target"])
    assert cf["without_rationale"]["label"] == LABELS[int(probs[1].argmax())]
    assert cf["without_rationale"]["target_probability"] == pytest.approx(probs[1][target], abs=1e-5)
    assert cf["rationale_only"]["target_probability"] == pytest.approx(probs[2][target], abs=1e-5)
    assert cf["comprehensiveness"] == pytest.approx(probs[0][target] - probs[1][target], abs=1e-5)
    assert cf["sufficiency"] == pytest.approx(probs[0][target] - probs[2][target], abs=1e-5)
    assert cf["prediction_changed"] == (cf["without_rationale"]["label"] != body["label"])


def test_explain_a_given_target(client, model):
    _, clf = model
    text = "block my card please"
    r = client.post("/explain", json={"text": text, "detail": "heatmap", "target": "alarm_set"})
    assert r.status_code == 200
    assert r.json()["target"] == "alarm_set"
    reference = GradientXInput(clf).attribute([text], [LABELS.index("alarm_set")])[0]
    np.testing.assert_allclose(
        [w["score"] for w in r.json()["words"]], reference.scores, rtol=1e-4, atol=1e-7
    )


# ---------------------------------------------------------------------------------------------- health etc.
def test_health_metrics_openapi_and_page(client):
    h = client.get("/health").json()
    assert h["status"] == "ok" and h["labels"] == len(LABELS) and h["backend"] == "torch"
    assert h["model"] == "tiny-model" and h["base_model"] == "tiny-bert" and h["uptime_s"] >= 0
    spec = client.get("/openapi.json").json()
    assert {"/predict", "/explain", "/health", "/metrics"} <= set(spec["paths"])
    assert {"PredictRequest", "PredictResponse", "ExplainRequest", "ExplainResponse"} <= set(
        spec["components"]["schemas"]
    )
    for code in ("413", "429", "503", "422"):
        assert code in spec["paths"]["/predict"]["post"]["responses"]
    page = client.get("/")
    assert page.status_code == 200 and "text/html" in page.headers["content-type"]
    assert 'id="heatmap"' in page.text and "http://" not in page.text and "https://" not in page.text
    client.post("/predict", json={"texts": ["x"]})
    metrics = client.get("/metrics")
    assert metrics.headers["content-type"].startswith("text/plain")
    families = {f.name: f for f in text_string_to_metric_families(metrics.text)}
    assert {
        "rationalign_requests",
        "rationalign_request_duration_seconds",
        "rationalign_batch_size",
        "rationalign_queue_depth",
    } <= set(families)
    counts = {
        (s.labels["endpoint"], s.labels["status"]): s.value
        for s in families["rationalign_requests"].samples
        if s.name == "rationalign_requests_total"
    }
    assert counts[("/predict", "200")] >= 1 and counts[("/health", "200")] >= 1


# ---------------------------------------------------------------------------------------------- limits
@pytest.mark.parametrize(
    ("path", "payload", "status"),
    [
        ("/predict", {"texts": ["x" * 1001]}, 413),
        ("/predict", {"texts": ["ok"] * 65}, 413),
        ("/explain", {"text": "y" * 1001}, 413),
        ("/predict", {"texts": []}, 422),
        ("/predict", {"texts": [""]}, 422),
        ("/predict", {"texts": "not a list"}, 422),
        ("/predict", {"text": ["wrong field"]}, 422),
        ("/predict", {"texts": ["a"], "top_k": 0}, 422),
        ("/predict", {"texts": [3]}, 422),
        ("/explain", {"text": "a", "detail": "everything"}, 422),
        ("/explain", {"text": "a", "k": 0}, 422),
        ("/explain", {"text": "a", "target": "no_such_label"}, 422),
        ("/explain", {}, 422),
    ],
)
def test_limits_and_malformed_input(client, path, payload, status):
    r = client.post(path, json=payload)
    assert r.status_code == status, r.text
    assert "detail" in r.json()


def test_exactly_at_the_limits_is_fine(client):
    assert client.post("/predict", json={"texts": ["x" * 1000]}).status_code == 200
    assert client.post("/predict", json={"texts": ["ok"] * 64}).status_code == 200


def test_broken_json_and_huge_bodies(client):
    r = client.post(
        "/predict", content=b'{"texts": ["unterminated', headers={"content-type": "application/json"}
    )
    assert r.status_code == 422
    huge = json.dumps({"texts": ["z" * 1000] * 2000}).encode()  # 2 MB: refused before parsing
    r = client.post("/predict", content=huge, headers={"content-type": "application/json"})
    assert r.status_code == 413


def test_api_key(model):
    with TestClient(create_app(model[0], api_key="s3cret")) as c:
        payload = {"texts": ["block my card"]}
        assert c.post("/predict", json=payload).status_code == 401
        wrong = c.post("/predict", json=payload, headers={"X-API-Key": "nope"})
        assert wrong.status_code == 401 and "Bearer" in wrong.headers["www-authenticate"]
        assert c.post("/predict", json=payload, headers={"X-API-Key": "s3cret"}).status_code == 200
        assert c.post("/predict", json=payload, headers={"Authorization": "Bearer s3cret"}).status_code == 200
        assert c.post("/predict", json=payload, headers={"Authorization": "Basic s3cret"}).status_code == 401
        assert c.post("/explain", json={"text": "hi"}).status_code == 401
        assert c.get("/metrics").status_code == 401
        assert c.get("/metrics", headers={"X-API-Key": "s3cret"}).status_code == 200
        assert c.get("/health").json()["auth_required"] is True  # health stays open for load balancers
        # Auth comes before validation: no key, bad body -> 401, not 422.
        assert c.post("/predict", json={"texts": []}).status_code == 401
        spec = c.get("/openapi.json").json()
        assert "401" in spec["paths"]["/predict"]["post"]["responses"]


def test_after_shutdown_requests_get_503(model):
    app = create_app(model[0])
    c = TestClient(app)
    with c:
        assert c.post("/predict", json={"texts": ["hello"]}).status_code == 200
    assert not app.state.serving.batcher.running
    r = c.post("/predict", json={"texts": ["hello"]})
    assert r.status_code == 503 and r.headers["retry-after"] == "1"
    assert c.get("/health").json()["status"] == "stopping"


# ---------------------------------------------------------------------------------------------- real server
def _metric_samples(text: str, name: str) -> dict:
    out = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            if s.name == name:
                out[tuple(sorted(s.labels.items()))] = s.value
    return out


def test_real_server_micro_batches_concurrent_requests(model):
    folder, clf = model
    app = create_app(folder, max_wait_ms=40)
    texts = [f"{t} {i}" for i, t in enumerate(TEXTS * 3)]
    barrier = threading.Barrier(len(texts), timeout=10)
    with background_server(app) as url:
        assert url.startswith("http://127.0.0.1:")

        def one(text: str) -> dict:
            with httpx.Client(base_url=url, timeout=10) as http:
                barrier.wait()
                r = http.post("/predict", json={"texts": [text]})
                assert r.status_code == 200, r.text
                return r.json()

        with ThreadPoolExecutor(len(texts)) as pool:
            bodies = list(pool.map(one, texts))
        metrics = httpx.get(f"{url}/metrics", timeout=10).text
    probs = reference_probs(clf, texts)
    for body, row in zip(bodies, probs, strict=True):
        assert body["predictions"][0]["probability"] == pytest.approx(row.max(), abs=1e-5)
    assert max(b["batch_size"] for b in bodies) > 1
    counts = _metric_samples(metrics, "rationalign_batch_size_count")[()]
    total = _metric_samples(metrics, "rationalign_batch_size_sum")[()]
    assert total == len(texts) and counts < len(texts)  # fewer batches than requests
    assert _metric_samples(metrics, "rationalign_requests_total")[
        (("endpoint", "/predict"), ("status", "200"))
    ] == len(texts)


def test_real_server_overload_answers_429_and_503(model):
    folder, _ = model
    app = create_app(folder, max_batch=4, queue_size=2, max_wait_ms=0, timeout_s=0.5)
    state = app.state.serving
    gate, started = threading.Event(), threading.Event()
    original = state.backend.logits

    def gated(texts):
        started.set()
        assert gate.wait(15), "test gate never opened"
        return original(texts)

    state.backend.logits = gated  # the batcher binds it when the lifespan starts
    with background_server(app) as url, ThreadPoolExecutor(4) as pool:

        def post(text: str) -> httpx.Response:
            return httpx.post(f"{url}/predict", json={"texts": [text]}, timeout=20)

        running = pool.submit(post, "running")
        assert started.wait(10)
        queued = [pool.submit(post, f"queued {i}") for i in range(2)]
        deadline = time.monotonic() + 10
        while state.batcher.depth < 2 and time.monotonic() < deadline:
            time.sleep(0.01)
        assert state.batcher.depth == 2
        refused = post("one too many")
        assert refused.status_code == 429 and refused.headers["retry-after"] == "1"
        assert "queue full" in refused.json()["detail"]
        time.sleep(0.7)  # the queued requests pass their 0.5 s deadline
        gate.set()
        assert running.result(20).status_code == 200
        late = [f.result(20) for f in queued]
        assert [r.status_code for r in late] == [503, 503]
        assert "timed out" in late[0].json()["detail"]
        metrics = httpx.get(f"{url}/metrics", timeout=10).text
    statuses = _metric_samples(metrics, "rationalign_requests_total")
    assert statuses[(("endpoint", "/predict"), ("status", "429"))] == 1
    assert statuses[(("endpoint", "/predict"), ("status", "503"))] == 2


def test_concurrent_explanations_do_not_disturb_predictions(model):
    """/explain hooks the embedding layer of its own model copy; batched /predict must stay exact."""
    folder, clf = model
    app = create_app(folder, max_wait_ms=1)
    probs = reference_probs(clf, TEXTS)
    with background_server(app) as url, ThreadPoolExecutor(6) as pool:

        def predict_loop(_: int) -> list[float]:
            out = []
            with httpx.Client(base_url=url, timeout=20) as http:
                for _ in range(8):
                    r = http.post("/predict", json={"texts": TEXTS})
                    assert r.status_code == 200, r.text
                    served = [p["probability"] for p in r.json()["predictions"]]
                    out.append(float(np.abs(np.array(served) - probs.max(1)).max()))
            return out

        def explain_loop(_: int) -> int:
            with httpx.Client(base_url=url, timeout=20) as http:
                for i in range(8):
                    r = http.post(
                        "/explain", json={"text": TEXTS[i % len(TEXTS)], "detail": "counterfactual"}
                    )
                    assert r.status_code == 200, r.text
            return 8

        predicted = [pool.submit(predict_loop, i) for i in range(3)]
        explained = [pool.submit(explain_loop, i) for i in range(3)]
        assert sum(f.result(60) for f in explained) == 24
        errors = [e for f in predicted for e in f.result(60)]
    assert max(errors) < 1e-5


# ---------------------------------------------------------------------------------------------- CLI
@pytest.fixture()
def cli() -> typer.Typer:
    app = typer.Typer()
    register(app)
    return app


def test_cli_serve_builds_the_app_on_loopback(cli, model, monkeypatch):
    import uvicorn

    captured = {}
    monkeypatch.setattr(
        uvicorn.Server, "run", lambda self, *a, **k: captured.setdefault("config", self.config)
    )
    result = CliRunner().invoke(cli, ["serve", str(model[0]), "--port", "8765", "--api-key", "k1"])
    assert result.exit_code == 0, result.output
    config = captured["config"]
    assert config.host == "127.0.0.1" and config.port == 8765
    with TestClient(config.app) as c:
        assert c.get("/health").json()["auth_required"] is True
        assert c.post("/predict", json={"texts": ["hi"]}, headers={"X-API-Key": "k1"}).status_code == 200


@pytest.mark.parametrize(
    ("args", "error"),
    [
        (["serve", "/no/such/model"], ConfigError),
        (["serve", "{model}", "--backend", "onnx"], ModelError),
    ],
)
def test_cli_serve_user_errors_are_one_line(cli, model, args, error):
    args = [a.format(model=model[0]) for a in args]
    result = CliRunner().invoke(cli, args)
    assert isinstance(result.exception, error) and isinstance(result.exception, RationalignError)
    assert "\n" not in str(result.exception) and "fix:" in str(result.exception)


def test_cli_serve_rejects_an_unknown_backend(cli, model):
    result = CliRunner().invoke(cli, ["serve", str(model[0]), "--backend", "tensorflow"])
    assert result.exit_code == 2
