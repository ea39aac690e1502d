"""``HTTPLLMTeacher``: an LLM behind an OpenAI-compatible ``/v1/completions`` endpoint as a teacher.

Servers: llama.cpp's ``llama-server``, vLLM, OpenAI-style gateways, or :mod:`rationalign.teachers.server`.
The prompt is the local teacher's (:mod:`rationalign.teachers.prompt`, built with the model's tokenizer,
which must be available locally to check that codes are single tokens). Each request carries up to
``batch_size`` prompts and asks for ONE token (``max_tokens=1``, ``temperature=0``) with the top
``logprobs`` alternatives; the label distribution is the softmax over the codes' log-probabilities.

``code_bias`` (default 50) is sent as ``logit_bias`` on every code token: adding the same constant to all
codes leaves their RELATIVE probabilities unchanged, but lifts them into the returned top list, so no
code is missing. Servers that report log-probabilities before the bias (vLLM) or ignore it still work;
then a code missing from the top list gets a floor probability: at most that of the least likely returned
token and, together with the other missing codes, at most the mass the returned tokens leave over,
``floor = max(1e-12, min(p_last, (1 - sum p_returned) / n_missing))``. ``cost.missing_codes`` counts them.

Failures: timeouts, connection errors, HTTP 429 and 5xx, and malformed (e.g. truncated) JSON are retried
``max_retries`` times with exponential backoff and jitter (``Retry-After`` is honoured, capped at
``max_retry_after``); other HTTP errors and well-formed answers without log-probabilities fail at once.
Every failure raises a :class:`~rationalign.teachers.errors.TeacherError` subclass whose one-line message
names the URL, the problem and the fix. At most ``concurrency`` requests are in flight (threads).
"""

from __future__ import annotations

import email.utils
import hashlib
import json
import math
import os
import random
import threading
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import httpx
import numpy as np
from transformers import AutoTokenizer

from rationalign.data.types import Example, IntentDataset, LabelSpace
from rationalign.models.resolver import resolve_model
from rationalign.teachers.errors import (
    TeacherConnectionError,
    TeacherHTTPError,
    TeacherResponseError,
    TeacherSpecError,
)
from rationalign.teachers.prompt import (
    DEFAULT_INSTRUCTION,
    BuiltPrompt,
    CodeStyle,
    Format,
    PromptBuilder,
    clip_text,
    select_examples,
)

API_KEY_ENV = "RATIONALIGN_API_KEY"
MIN_PROBABILITY = 1e-12
SERVER_HINT = "python -m rationalign.teachers.server --model smollm2-135m --port 8080"


@dataclass
class HTTPCost:
    requests: int = 0  # HTTP requests sent, retries included
    retries: int = 0
    texts: int = 0
    prompt_tokens: int = 0  # as reported by the server's usage block
    missing_codes: int = 0  # codes absent from top_logprobs that got the floor probability
    seconds: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _one_line(text: str, limit: int = 160) -> str:
    flat = " ".join(str(text).split())
    return flat if len(flat) <= limit else flat[: limit - 3] + "..."


def _error_detail(response: httpx.Response) -> str:
    """The server's error message: OpenAI-style ``{"error": {"message": ...}}`` if present, else the body."""
    try:
        body = response.json()
    except ValueError:
        body = None
    detail: Any = response.text
    if isinstance(body, dict) and body.get("error"):
        error = body["error"]
        detail = error.get("message", error) if isinstance(error, dict) else error
    elif isinstance(body, dict) and body.get("detail"):  # FastAPI validation errors (422)
        detail = body["detail"]
        if isinstance(detail, list) and detail and isinstance(detail[0], dict):
            first = detail[0]
            detail = f"{'.'.join(str(x) for x in first.get('loc', []))}: {first.get('msg', '')}"
    return _one_line(str(detail), 120) or "empty body"


def _retry_after_seconds(value: str | None) -> float | None:
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())


def _normalise_base_url(base_url: str) -> str:
    url = base_url.strip().rstrip("/")
    if not url.startswith(("http://", "https://")):
        raise TeacherSpecError(f"{base_url}: not an http(s) URL; fix: pass e.g. http://127.0.0.1:8080/v1")
    if url.endswith("/completions"):
        url = url[: -len("/completions")]
    parsed = httpx.URL(url)
    if parsed.path in ("", "/"):
        url += "/v1"
    return url


def _top_logprobs(choice: Any) -> dict[str, float] | None:
    """The first generated token's ``{token text: logprob}`` from a legacy or a chat-style logprobs block."""
    if not isinstance(choice, dict):
        return None
    block = choice.get("logprobs")
    if not isinstance(block, dict):
        return None
    legacy = block.get("top_logprobs")
    if isinstance(legacy, list) and legacy and isinstance(legacy[0], dict):
        return {str(k): float(v) for k, v in legacy[0].items() if isinstance(v, int | float)}
    content = block.get("content")  # llama.cpp's newer /v1/completions and chat-completions style
    if isinstance(content, list) and content and isinstance(content[0], dict):
        alts = content[0].get("top_logprobs")
        if isinstance(alts, list):
            out: dict[str, float] = {}
            for alt in alts:
                if isinstance(alt, dict) and isinstance(alt.get("logprob"), int | float):
                    out.setdefault(str(alt.get("token", "")), float(alt["logprob"]))
            return out
    return None


class HTTPLLMTeacher:
    """A remote LLM as a :class:`~rationalign.teachers.base.Teacher` (see the module docstring)."""

    def __init__(
        self,
        base_url: str,
        model: str,
        label_space: LabelSpace,
        *,
        tokenizer: Any = None,
        api_key: str | None = None,
        timeout: float = 30.0,
        max_retries: int = 4,
        concurrency: int = 4,
        batch_size: int = 8,
        mode: str = "codes",
        examples: IntentDataset | Sequence[Example] | None = None,
        shots: int | None = None,
        example_budget: int | None = None,
        seed: int = 0,
        format: Format = "auto",
        instruction: str = DEFAULT_INSTRUCTION,
        code_style: CodeStyle = "mnemonic",
        code_bias: float | None = 50.0,
        top_logprobs: int | None = None,
        backoff_base: float = 0.5,
        backoff_max: float = 8.0,
        max_retry_after: float = 60.0,
        transport: httpx.BaseTransport | None = None,
        max_text_tokens: int | None = 256,
    ):
        if mode != "codes":
            raise TeacherSpecError(
                f"HTTP teachers support mode='codes' only, got {mode!r}; fix: use mode=codes, or a local "
                "llm: teacher for label_text"
            )
        if max_retries < 0 or concurrency < 1 or batch_size < 1 or timeout <= 0:
            raise TeacherSpecError(
                "max_retries >= 0, concurrency >= 1, batch_size >= 1 and timeout > 0 are required; fix: check "
                f"the options (got max_retries={max_retries}, concurrency={concurrency}, batch_size={batch_size}, "
                f"timeout={timeout})"
            )
        self.base_url = _normalise_base_url(base_url)
        self.endpoint = self.base_url + "/completions"
        self.model = model
        self.label_space = label_space
        self.timeout = float(timeout)
        self.max_retries = max_retries
        self.concurrency = concurrency
        self.batch_size = batch_size
        self.backoff_base = backoff_base
        self.backoff_max = backoff_max
        self.max_retry_after = max_retry_after
        self.code_bias = code_bias
        self.max_text_tokens = max_text_tokens
        self.tokenizer = self._tokenizer(tokenizer, model)
        chosen: list[Example] = []
        if examples is not None:
            if shots is not None or example_budget is not None:
                chosen = select_examples(examples, label_space, shots=shots, budget=example_budget, seed=seed)
            else:
                chosen = list(examples)
        self.prompt: BuiltPrompt = PromptBuilder(
            self.tokenizer,
            label_space,
            mode="codes",
            format=format,
            instruction=instruction,
            examples=chosen,
            code_style=code_style,
        ).build()
        assert self.prompt.codes is not None
        self.codes = self.prompt.codes
        n = len(self.codes)
        self.top_logprobs = top_logprobs if top_logprobs is not None else n + 5
        self._answers = [self.codes.answer_token(i) for i in range(n)]
        key = api_key or os.environ.get(API_KEY_ENV)
        headers = {"Authorization": f"Bearer {key}"} if key else {}
        self._client = httpx.Client(
            timeout=httpx.Timeout(self.timeout),
            headers=headers,
            transport=transport,
            limits=httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency),
        )
        self._rng = random.Random(seed)
        self._lock = threading.Lock()
        self.cost = HTTPCost()

    @staticmethod
    def _tokenizer(tokenizer: Any, model: str):
        if tokenizer is not None and not isinstance(tokenizer, str | Path):
            return tokenizer
        source = tokenizer if tokenizer is not None else model
        try:
            return AutoTokenizer.from_pretrained(resolve_model(source))
        except Exception as err:  # ModelError, or a folder without tokenizer files
            raise TeacherSpecError(
                f"{source}: no local tokenizer for the served model ({_one_line(str(err), 120)}); fix: pass "
                "tokenizer=<shipped name or local HF folder of the served model's tokenizer>"
            ) from None

    # ------------------------------------------------------------------------------------- requests
    def close(self) -> None:
        self._client.close()

    def __enter__(self) -> HTTPLLMTeacher:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _backoff(self, attempt: int) -> float:
        # Exponential backoff with "equal jitter": half the step fixed, half random, so that clients that
        # failed together do not retry together.
        step = min(self.backoff_max, self.backoff_base * 2**attempt)
        with self._lock:
            return step / 2 + self._rng.uniform(0, step / 2)

    def _payload(self, texts: Sequence[str]) -> dict[str, Any]:
        payload: dict[str, Any] = {
            "model": self.model,
            "prompt": [self.prompt.full(clip_text(self.tokenizer, t, self.max_text_tokens)) for t in texts],
            "max_tokens": 1,
            "temperature": 0,
            "logprobs": self.top_logprobs,
        }
        if self.code_bias:
            payload["logit_bias"] = {str(t): self.code_bias for t in self.codes.token_ids}
        return payload

    def _post(self, payload: dict[str, Any]) -> dict[str, Any]:
        url = self.endpoint
        attempts = self.max_retries + 1
        problem = ""
        kind: type[TeacherHTTPError] = TeacherHTTPError
        status: int | None = None
        for attempt in range(attempts):
            delay: float | None = None
            with self._lock:
                self.cost.requests += 1
                if attempt:
                    self.cost.retries += 1
            try:
                response = self._client.post(url, json=payload)
            except httpx.TimeoutException:
                kind, status = TeacherConnectionError, None
                problem = f"no answer within {self.timeout:g} s"
            except httpx.TransportError as err:
                kind, status = TeacherConnectionError, None
                problem = f"cannot connect ({type(err).__name__}: {_one_line(str(err), 80)})"
            else:
                status = response.status_code
                if status == 200:
                    try:
                        return json.loads(response.content)
                    except ValueError:
                        kind = TeacherResponseError
                        problem = f"malformed JSON in response (truncated?): {_one_line(response.text, 80)!r}"
                elif status == 429 or status >= 500:
                    kind = TeacherHTTPError
                    problem = f"HTTP {status} ({_error_detail(response)})"
                    retry_after = _retry_after_seconds(response.headers.get("retry-after"))
                    if retry_after is not None:
                        delay = min(retry_after, self.max_retry_after)
                else:
                    raise self._fatal(response)
            if attempt + 1 < attempts:
                time.sleep(delay if delay is not None else self._backoff(attempt))
        fix = {
            TeacherConnectionError: f"start the server (e.g. {SERVER_HINT}), check base_url, or raise timeout=",
            TeacherResponseError: "check that base_url is an OpenAI-compatible /v1 endpoint and that no proxy cuts answers",
            TeacherHTTPError: "check the server's log; retry later or raise max_retries=",
        }[kind]
        raise kind(f"{url}: {problem} (after {attempts} attempts); fix: {fix}", status)

    def _fatal(self, response: httpx.Response) -> TeacherHTTPError:
        status = response.status_code
        detail = _error_detail(response)
        if status in (401, 403):
            fix = f"pass api_key=... or set {API_KEY_ENV}"
        elif status == 404:
            fix = f"check that base_url ends with /v1 and that model={self.model!r} is served (GET {self.base_url}/models)"
        else:
            fix = "check the request options (logprobs, logit_bias) against the server's limits"
        return TeacherHTTPError(f"{self.endpoint}: HTTP {status} ({detail}); fix: {fix}", status)

    # ------------------------------------------------------------------------------------- parsing
    def _distribution(self, top: dict[str, float]) -> tuple[np.ndarray, int]:
        n = len(self._answers)
        logp = np.full(n, np.nan)
        for i, answer in enumerate(self._answers):
            if answer in top:
                logp[i] = top[answer]
        missing = int(np.isnan(logp).sum())
        probs = np.exp(logp)
        if missing:
            returned = np.exp(np.array(list(top.values()), dtype=np.float64))
            smallest = float(returned.min()) if returned.size else 1.0
            leftover = max(0.0, 1.0 - float(returned.sum()))
            floor = max(MIN_PROBABILITY, min(smallest, leftover / missing))
            probs[np.isnan(probs)] = floor
        return probs / probs.sum(), missing

    def _score_batch(self, texts: Sequence[str]) -> np.ndarray:
        data = self._post(self._payload(texts))
        choices = data.get("choices") if isinstance(data, dict) else None
        fix = "use a server that returns logprobs for /v1/completions (llama.cpp server, vLLM, rationalign.teachers.server)"
        if not isinstance(choices, list) or len(choices) != len(texts):
            got = len(choices) if isinstance(choices, list) else "no"
            raise TeacherResponseError(
                f"{self.endpoint}: expected {len(texts)} choices, got {got}; fix: {fix}"
            )
        # Answers carry their prompt's index; keep list order when a server leaves it out.
        ordered = (
            sorted(choices, key=lambda c: c.get("index", 0))
            if all(isinstance(c, dict) and "index" in c for c in choices)
            else choices
        )
        out = np.zeros((len(texts), len(self._answers)))
        missing = 0
        for row, choice in enumerate(ordered):
            top = _top_logprobs(choice)
            if not top:
                raise TeacherResponseError(
                    f"{self.endpoint}: choice {row} has no logprobs.top_logprobs; fix: {fix}"
                )
            if any(math.isnan(v) for v in top.values()):
                raise TeacherResponseError(
                    f"{self.endpoint}: NaN log-probabilities in choice {row}; fix: {fix}"
                )
            out[row], m = self._distribution(top)
            missing += m
        usage = data.get("usage") if isinstance(data, dict) else None
        with self._lock:
            self.cost.missing_codes += missing
            if isinstance(usage, dict) and isinstance(usage.get("prompt_tokens"), int):
                self.cost.prompt_tokens += usage["prompt_tokens"]
        return out

    def predict_proba(self, texts: Sequence[str]) -> np.ndarray:
        texts = list(texts)
        out = np.zeros((len(texts), len(self.label_space)), dtype=np.float64)
        if not texts:
            return out
        start = time.perf_counter()
        spans = [(lo, min(lo + self.batch_size, len(texts))) for lo in range(0, len(texts), self.batch_size)]
        with ThreadPoolExecutor(max_workers=min(self.concurrency, len(spans))) as pool:
            futures = [(lo, hi, pool.submit(self._score_batch, texts[lo:hi])) for lo, hi in spans]
            try:
                for lo, hi, future in futures:
                    out[lo:hi] = future.result()
            except BaseException:
                for _, _, future in futures:
                    future.cancel()
                raise
        self.cost.texts += len(texts)
        self.cost.seconds += time.perf_counter() - start
        return out

    @property
    def fingerprint(self) -> str:
        # The server's weights are invisible from here: the model id stands for them (serve versioned ids).
        spec = {
            "kind": "http-llm",
            "model": self.model,
            "prompt": self.prompt.describe(),
            "code_bias": self.code_bias,
            "top_logprobs": self.top_logprobs,
            "max_text_tokens": self.max_text_tokens,
        }
        return hashlib.sha256(json.dumps(spec, sort_keys=True).encode()).hexdigest()

    def __repr__(self) -> str:
        return f"HTTPLLMTeacher({self.endpoint!r}, model={self.model!r}, {len(self.label_space)} labels)"
