"""An OpenAI-compatible completions server over a local causal LM (for tests, and for users without llama.cpp).

``create_app(teacher_or_model)`` returns a FastAPI app with

* ``GET /v1/models``: the one served model;
* ``POST /v1/completions``: ``prompt`` (a string or a list of strings), ``max_tokens``, ``temperature``
  (0 = greedy), ``logprobs`` (how many top alternatives per generated token), ``logit_bias``
  (``{"token id": bias}``, added to the logits BEFORE log-probabilities are taken, as OpenAI does),
  ``stop``, ``seed``. The answer uses the legacy OpenAI format that llama.cpp and vLLM also speak:
  ``choices[i].logprobs = {tokens, token_logprobs, top_logprobs: [{token text: logprob}], text_offset}``.

A prompt is tokenized with :func:`~rationalign.teachers.prompt.encode_prompt_start` (BOS added unless the
text starts with it), the rule the local teachers use, so the same prompt text gives the same token ids.
Model calls are serialised by a lock; a batch of prompts with ``max_tokens=1`` (the teacher's request) runs
as ONE right-padded forward pass.

``serve_in_thread(app)`` runs uvicorn on 127.0.0.1 (a free port by default) in a background thread;
:class:`FaultInjectingServer` puts scripted faults (500, 429 + Retry-After, slow, truncated JSON, ...) in
front of an app, for the HTTP teacher's tests. Command line::

    python -m rationalign.teachers.server --model smollm2-135m --port 8080
"""

from __future__ import annotations

import argparse
import asyncio
import json
import socket
import threading
import time
import uuid
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from fastapi import FastAPI
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field
from transformers import AutoModelForCausalLM, AutoTokenizer, PreTrainedModel

from rationalign.models.resolver import resolve_model
from rationalign.teachers.errors import TeacherError
from rationalign.teachers.prompt import encode_prompt_start

MAX_TOP_LOGPROBS = 1000  # enough for CLINC150's 150 codes; keeps answers bounded
MAX_TOKENS = 256
MAX_PROMPTS = 256


class CompletionRequest(BaseModel):
    model_config = ConfigDict(extra="ignore")

    model: str | None = None
    prompt: str | list[str]
    max_tokens: int = Field(16, ge=1, le=MAX_TOKENS)
    temperature: float = Field(1.0, ge=0.0, le=5.0)
    logprobs: int | None = Field(None, ge=0, le=MAX_TOP_LOGPROBS)
    logit_bias: dict[str, float] | None = None
    stop: str | list[str] | None = None
    seed: int | None = None
    echo: bool = False


def _error(status: int, message: str, kind: str = "invalid_request_error") -> JSONResponse:
    return JSONResponse({"error": {"message": message, "type": kind, "code": status}}, status_code=status)


class _Engine:
    """The model, its tokenizer and a lock; turns prompts into completions with log-probabilities."""

    def __init__(self, model: PreTrainedModel, tokenizer, name: str):
        self.model = model.eval()
        self.tokenizer = tokenizer
        self.name = name
        self.lock = threading.Lock()
        self.device = next(model.parameters()).device
        self.vocab_size = model.get_output_embeddings().weight.shape[0]
        self.calls = 0

    def _piece(self, token_id: int) -> str:
        return self.tokenizer.decode([token_id], clean_up_tokenization_spaces=False)

    def _bias(self, logit_bias: dict[str, float] | None) -> torch.Tensor | None:
        if not logit_bias:
            return None
        bias = torch.zeros(self.vocab_size)
        for key, value in logit_bias.items():
            try:
                tid = int(key)
            except ValueError:
                raise ValueError(f"logit_bias keys must be token ids, got {key!r}") from None
            if not 0 <= tid < self.vocab_size:
                raise ValueError(
                    f"logit_bias token id {tid} is outside the vocabulary (0..{self.vocab_size - 1})"
                )
            bias[tid] = float(value)
        return bias.to(self.device)

    def _choose(self, logp: torch.Tensor, temperature: float, gen: torch.Generator | None) -> int:
        if temperature == 0:
            return int(torch.argmax(logp))
        probs = torch.softmax(logp / temperature, dim=-1).cpu()
        return int(torch.multinomial(probs, 1, generator=gen))

    def _top(self, logp: torch.Tensor, k: int) -> dict[str, float]:
        values, ids = torch.topk(logp, k)
        top: dict[str, float] = {}
        for v, i in zip(values.tolist(), ids.tolist(), strict=True):
            piece = self._piece(i)
            top.setdefault(piece, v)  # pieces that decode alike (byte fragments) keep the likelier one
        return top

    def complete(self, req: CompletionRequest) -> dict[str, Any]:
        prompts = [req.prompt] if isinstance(req.prompt, str) else list(req.prompt)
        if not prompts or len(prompts) > MAX_PROMPTS:
            raise ValueError(f"prompt must hold 1..{MAX_PROMPTS} strings, got {len(prompts)}")
        bias = self._bias(req.logit_bias)
        stops = [req.stop] if isinstance(req.stop, str) else list(req.stop or [])
        gen = torch.Generator().manual_seed(req.seed) if req.seed is not None else None
        encoded = [encode_prompt_start(self.tokenizer, p) for p in prompts]
        if any(not ids for ids in encoded):
            raise ValueError("a prompt tokenizes to nothing; send non-empty text")
        with self.lock, torch.inference_mode():
            self.calls += 1
            if req.max_tokens == 1:
                first = self._first_logprobs(encoded, bias)
                steps = [[row] for row in first]
                generated = [[self._choose(row, req.temperature, gen)] for row in first]
            else:
                steps, generated = [], []
                for ids in encoded:
                    rows, toks = self._generate(ids, req.max_tokens, req.temperature, bias, gen, stops)
                    steps.append(rows)
                    generated.append(toks)
        choices = []
        for index, (rows, toks) in enumerate(zip(steps, generated, strict=True)):
            pieces = [self._piece(t) for t in toks]
            text = "".join(pieces)
            finish = "length" if len(toks) >= req.max_tokens else "stop"
            for s in stops:
                if s and s in text:
                    text, finish = text[: text.index(s)], "stop"
            logprobs = None
            if req.logprobs is not None:
                offsets, pos = [], 0
                for p in pieces:
                    offsets.append(pos)
                    pos += len(p)
                logprobs = {
                    "tokens": pieces,
                    "token_logprobs": [float(r[t]) for r, t in zip(rows, toks, strict=True)],
                    "top_logprobs": [self._top(r, min(req.logprobs, self.vocab_size)) for r in rows]
                    if req.logprobs > 0
                    else None,
                    "text_offset": offsets,
                }
            choices.append({"text": text, "index": index, "logprobs": logprobs, "finish_reason": finish})
        prompt_tokens = sum(len(e) for e in encoded)
        completion_tokens = sum(len(g) for g in generated)
        return {
            "id": f"cmpl-{uuid.uuid4().hex[:24]}",
            "object": "text_completion",
            "created": int(time.time()),
            "model": self.name,
            "choices": choices,
            "usage": {
                "prompt_tokens": prompt_tokens,
                "completion_tokens": completion_tokens,
                "total_tokens": prompt_tokens + completion_tokens,
            },
        }

    def _first_logprobs(self, encoded: list[list[int]], bias: torch.Tensor | None) -> list[torch.Tensor]:
        """Next-token log-probs for every prompt: one forward pass, right padding, last real position."""
        width = max(len(e) for e in encoded)
        pad = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else 0
        ids = torch.full((len(encoded), width), pad, dtype=torch.long)
        mask = torch.zeros_like(ids)
        for i, e in enumerate(encoded):
            ids[i, : len(e)] = torch.tensor(e)
            mask[i, : len(e)] = 1
        last = torch.tensor([len(e) - 1 for e in encoded])
        keep = torch.unique(last)
        out = self.model(
            input_ids=ids.to(self.device),
            attention_mask=mask.to(self.device),
            logits_to_keep=keep.to(self.device),
        )
        logits = out.logits[
            torch.arange(len(encoded)), torch.searchsorted(keep, last).to(self.device)
        ].float()
        if bias is not None:
            logits = logits + bias
        return list(torch.log_softmax(logits, dim=-1))

    def _generate(self, ids, max_tokens, temperature, bias, gen, stops):
        rows, toks = [], []
        cache = None
        inp = torch.tensor([ids], device=self.device)
        text = ""
        for _ in range(max_tokens):
            out = self.model(input_ids=inp, past_key_values=cache, use_cache=True, logits_to_keep=1)
            cache = out.past_key_values
            logits = out.logits[0, -1].float()
            if bias is not None:
                logits = logits + bias
            logp = torch.log_softmax(logits, dim=-1)
            tok = self._choose(logp, temperature, gen)
            rows.append(logp)
            toks.append(tok)
            text += self._piece(tok)
            if tok == self.tokenizer.eos_token_id or any(s and s in text for s in stops):
                break
            inp = torch.tensor([[tok]], device=self.device)
        return rows, toks


def _engine_for(teacher_or_model: Any, tokenizer: Any, name: str | None, device: str) -> _Engine:
    # An LLMTeacher (duck-typed to avoid importing torch-heavy modules twice): reuse its model and tokenizer.
    if (
        hasattr(teacher_or_model, "model")
        and hasattr(teacher_or_model, "tokenizer")
        and not isinstance(teacher_or_model, PreTrainedModel)
    ):
        model = teacher_or_model.model
        tokenizer = teacher_or_model.tokenizer
        name = name or getattr(teacher_or_model, "model_name", None) or "local-llm"
        return _Engine(model, tokenizer, name)
    if isinstance(teacher_or_model, PreTrainedModel):
        if tokenizer is None:
            raise TeacherError("create_app(model) needs the model's tokenizer; fix: pass tokenizer=...")
        return _Engine(teacher_or_model, tokenizer, name or "local-llm")
    folder = resolve_model(teacher_or_model)
    model = AutoModelForCausalLM.from_pretrained(folder).to(device)
    tok = tokenizer or AutoTokenizer.from_pretrained(folder)
    if isinstance(tok, str | Path):
        tok = AutoTokenizer.from_pretrained(resolve_model(tok))
    return _Engine(model, tok, name or str(teacher_or_model))


def create_app(
    teacher_or_model: Any = "smollm2-135m",
    *,
    tokenizer: Any = None,
    model_name: str | None = None,
    device: str = "cpu",
) -> FastAPI:
    """A FastAPI app serving ``/v1/completions`` and ``/v1/models`` over an ``LLMTeacher``'s model, a loaded
    causal LM (with ``tokenizer``), or a shipped name / local folder."""
    engine = _engine_for(teacher_or_model, tokenizer, model_name, device)
    app = FastAPI(title="rationalign completions server", version="1")
    app.state.engine = engine

    @app.get("/v1/models")
    def models() -> dict:
        return {"object": "list", "data": [{"id": engine.name, "object": "model", "owned_by": "rationalign"}]}

    @app.post("/v1/completions")
    def completions(req: CompletionRequest):
        if req.model is not None and req.model != engine.name:
            return _error(
                404,
                f"model {req.model!r} is not served here; this server serves {engine.name!r}",
                "not_found_error",
            )
        if req.echo:
            return _error(400, "echo=true is not supported")
        try:
            return engine.complete(req)
        except ValueError as err:
            return _error(400, str(err))

    return app


# ---------------------------------------------------------------------------------------- running


@dataclass
class RunningServer:
    """A uvicorn server in a background thread; ``url`` is ``http://127.0.0.1:<port>``."""

    server: Any
    thread: threading.Thread
    host: str
    port: int

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def stop(self, timeout: float = 10.0) -> None:
        self.server.should_exit = True
        self.thread.join(timeout)

    def __enter__(self) -> RunningServer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def serve_in_thread(
    app: Any, host: str = "127.0.0.1", port: int = 0, startup_timeout: float = 30.0
) -> RunningServer:
    """Start uvicorn for ``app`` on ``host:port`` (0 = a free port) in a daemon thread; return once it
    accepts connections. Stop it with ``.stop()`` or use it as a context manager."""
    import uvicorn

    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    bound_port = sock.getsockname()[1]
    config = uvicorn.Config(app, log_level="warning", lifespan="off", timeout_graceful_shutdown=2)
    server = uvicorn.Server(config)
    thread = threading.Thread(
        target=server.run, kwargs={"sockets": [sock]}, daemon=True, name="rationalign-llm-server"
    )
    thread.start()
    deadline = time.monotonic() + startup_timeout
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            server.should_exit = True
            raise TeacherError(
                f"http://{host}:{bound_port}: the server did not start; fix: see the log above"
            )
        time.sleep(0.02)
    return RunningServer(server, thread, host, bound_port)


# ----------------------------------------------------------------------------------- fault injection


FAULTS = ("ok", "500", "503", "429", "slow", "truncated", "garbage", "no_logprobs")


class FaultInjector:
    """ASGI middleware: each POST consumes the next scripted fault, then requests pass through unchanged.

    ``500``/``503``: that status with an error body. ``429``: Too Many Requests with ``Retry-After``.
    ``slow``: wait ``slow_seconds`` (meant to exceed the client's timeout), then answer normally.
    ``truncated``: the real answer cut in half (with a matching Content-Length: valid HTTP, broken JSON).
    ``garbage``: 200 with a non-JSON body. ``no_logprobs``: a 200 JSON answer without logprobs.
    """

    def __init__(self, app: Any, faults: Iterable[str], *, retry_after: str = "1", slow_seconds: float = 2.0):
        unknown = [f for f in faults if f not in FAULTS]
        if unknown:
            raise ValueError(f"unknown faults {unknown}; known: {FAULTS}")
        self.app = app
        self.faults: deque[str] = deque(faults)
        self.retry_after = retry_after
        self.slow_seconds = slow_seconds
        self.lock = threading.Lock()
        self.log: list[tuple[str, float]] = []  # (fault served, monotonic time)
        self.in_flight = 0
        self.max_in_flight = 0  # most POST requests handled at once (checks a client's concurrency limit)

    def _next(self) -> str:
        with self.lock:
            fault = self.faults.popleft() if self.faults else "ok"
            self.log.append((fault, time.monotonic()))
            return fault

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http" or scope["method"] != "POST":
            await self.app(scope, receive, send)
            return
        fault = self._next()
        with self.lock:
            self.in_flight += 1
            self.max_in_flight = max(self.max_in_flight, self.in_flight)
        try:
            await self._serve(fault, scope, receive, send)
        finally:
            with self.lock:
                self.in_flight -= 1

    async def _serve(self, fault: str, scope, receive, send) -> None:
        if fault in ("500", "503", "429"):
            status = int(fault)
            body = json.dumps({"error": {"message": f"injected {status}", "type": "server_error"}}).encode()
            headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
            if status == 429:
                headers.append((b"retry-after", self.retry_after.encode()))
            await send({"type": "http.response.start", "status": status, "headers": headers})
            await send({"type": "http.response.body", "body": body})
            return
        if fault == "garbage":
            body = b"<html>502 Bad Gateway</html>"
            await send(
                {
                    "type": "http.response.start",
                    "status": 200,
                    "headers": [
                        (b"content-type", b"application/json"),
                        (b"content-length", str(len(body)).encode()),
                    ],
                }
            )
            await send({"type": "http.response.body", "body": body})
            return
        if fault == "slow":
            await asyncio.sleep(self.slow_seconds)
        if fault in ("truncated", "no_logprobs"):
            await self._rewrite(fault, scope, receive, send)
            return
        await self.app(scope, receive, send)

    async def _rewrite(self, fault: str, scope, receive, send) -> None:
        start: dict = {}
        chunks: list[bytes] = []

        async def capture(message):
            if message["type"] == "http.response.start":
                start.update(message)
            elif message["type"] == "http.response.body":
                chunks.append(message.get("body", b""))

        await self.app(scope, receive, capture)
        body = b"".join(chunks)
        if fault == "truncated":
            body = body[: max(1, len(body) // 2)]
        else:
            data = json.loads(body)
            for choice in data.get("choices", []):
                choice["logprobs"] = None
            body = json.dumps(data).encode()
        headers = [(k, v) for k, v in start.get("headers", []) if k.lower() != b"content-length"]
        headers.append((b"content-length", str(len(body)).encode()))
        await send({"type": "http.response.start", "status": start.get("status", 200), "headers": headers})
        await send({"type": "http.response.body", "body": body})


@dataclass
class FaultInjectingServer:
    """A real uvicorn server on 127.0.0.1 whose first requests fail as scripted (see :class:`FaultInjector`).

    ``with FaultInjectingServer(create_app(teacher), ["500", "429", "ok"]) as srv: ... srv.url ...``
    """

    app: Any
    faults: list[str] = field(default_factory=list)
    retry_after: str = "1"
    slow_seconds: float = 2.0

    def __post_init__(self) -> None:
        self.injector = FaultInjector(
            self.app, self.faults, retry_after=self.retry_after, slow_seconds=self.slow_seconds
        )
        self._running: RunningServer | None = None

    def start(self) -> FaultInjectingServer:
        self._running = serve_in_thread(self.injector)
        return self

    @property
    def url(self) -> str:
        if self._running is None:
            raise RuntimeError("server not started")
        return self._running.url

    @property
    def served(self) -> list[str]:
        """The faults (or ``ok``) served so far, in order: one per POST request received."""
        return [f for f, _ in self.injector.log]

    @property
    def max_in_flight(self) -> int:
        return self.injector.max_in_flight

    def stop(self) -> None:
        if self._running is not None:
            self._running.stop()
            self._running = None

    def __enter__(self) -> FaultInjectingServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description="OpenAI-compatible /v1/completions server over a local causal LM"
    )
    parser.add_argument("--model", default="smollm2-135m", help="shipped name or local HF folder")
    parser.add_argument("--name", default=None, help="model id clients must send (default: --model)")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8080)
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args(argv)
    import sys

    import uvicorn

    from rationalign.errors import RationalignError

    try:
        app = create_app(args.model, model_name=args.name, device=args.device)
    except RationalignError as err:
        print(f"error: {err}", file=sys.stderr)
        raise SystemExit(2) from None
    uvicorn.run(app, host=args.host, port=args.port, log_level="info")


if __name__ == "__main__":  # pragma: no cover
    main()
