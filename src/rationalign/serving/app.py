"""The FastAPI app: ``/predict`` (micro-batched), ``/explain``, ``/health``, ``/metrics`` and a web page.

Limits answer with explicit codes instead of piling up work: 413 for a text or batch over the limits (or a
body too big to hold them), 422 for malformed input, 401 without the API key (when one is set), 429 when
the queue is full, 503 while shutting down or after waiting past the deadline.
"""

from __future__ import annotations

import asyncio
import hmac
import threading
import time
from collections.abc import Awaitable, Callable, Iterator, MutableMapping
from contextlib import asynccontextmanager, contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Annotated, Any, Literal

import numpy as np
from fastapi import Depends, FastAPI, HTTPException, Request, Security
from fastapi.concurrency import run_in_threadpool
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse, Response
from fastapi.security import APIKeyHeader, HTTPAuthorizationCredentials, HTTPBearer
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST
from pydantic import BaseModel, ConfigDict, Field

from rationalign import __version__
from rationalign.data.types import LabelSpace
from rationalign.errors import ConfigError, ModelError
from rationalign.models.classifier import IntentClassifier
from rationalign.serving.backends import (
    BACKENDS,
    Backend,
    TorchBackend,
    calibrated,
    has_torch_weights,
    load_backend,
)
from rationalign.serving.batching import BatcherError, MicroBatcher, ShuttingDown

STATIC_DIR = Path(__file__).parent / "static"
ENDPOINTS = ("/predict", "/explain", "/health", "/metrics", "/", "/openapi.json", "/docs", "/redoc")
LATENCY_BUCKETS = (0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0, 10.0)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256)


# ---------------------------------------------------------------------------------------------- schemas
class PredictRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    texts: list[Annotated[str, Field(min_length=1)]] = Field(
        ...,
        min_length=1,
        description="Utterances to classify (at most max_batch, each at most max_text_chars).",
    )
    top_k: int = Field(5, ge=1, le=100, description="How many labels to list per text, most probable first.")


class LabelScore(BaseModel):
    label: str
    probability: float


class TextPrediction(BaseModel):
    label: str = Field(description="The most probable label.")
    probability: float = Field(description="Its calibrated probability: softmax(logits / temperature).")
    abstain: bool = Field(description="True when the probability is below the model's abstain threshold.")
    top_k: list[LabelScore]
    latency_ms: float = Field(description="Server time for this text: queue wait + batch compute + decoding.")


class PredictResponse(BaseModel):
    model: str
    backend: str
    predictions: list[TextPrediction]
    batch_size: int = Field(description="Texts in the micro-batch that served this request (>= len(texts)).")
    queue_ms: float
    compute_ms: float
    latency_ms: float


class ExplainRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    text: str = Field(..., min_length=1, description="One utterance (at most max_text_chars).")
    detail: Literal["top_k", "heatmap", "counterfactual"] = Field(
        "top_k",
        description="top_k: the k best words; heatmap: every word with a normalised score; counterfactual: "
        "top_k plus the prediction with those words deleted, and with only them kept.",
    )
    k: int = Field(5, ge=1, le=64, description="How many words form the rationale.")
    target: str | None = Field(None, description="Label to explain; default: the predicted label.")


class WordScoreOut(BaseModel):
    index: int = Field(description="Position among the utterance's words.")
    word: str
    score: float = Field(
        description="Gradient x input of the target's log-probability, summed over subwords."
    )
    weight: float = Field(description="score / max |score| over the utterance, in [-1, 1].")


class OutcomeOut(BaseModel):
    text: str
    label: str
    probability: float
    target_probability: float


class CounterfactualOut(BaseModel):
    removed: list[str]
    without_rationale: OutcomeOut
    rationale_only: OutcomeOut
    prediction_changed: bool = Field(description="Deleting the rationale changed the predicted label.")
    rationale_sufficient: bool = Field(description="The rationale alone keeps the predicted label.")
    comprehensiveness: float
    sufficiency: float


class ExplainResponse(BaseModel):
    text: str
    label: str
    probability: float
    target: str
    target_probability: float
    method: str
    detail: str
    words: list[WordScoreOut] = Field(
        description="top_k/counterfactual: the k best words; heatmap: all words."
    )
    counterfactual: CounterfactualOut | None = None
    latency_ms: float


class HealthResponse(BaseModel):
    status: Literal["ok", "stopping"]
    model: str
    base_model: str | None
    labels: int
    backend: str
    explain: bool
    auth_required: bool
    max_text_chars: int
    max_batch: int
    uptime_s: float
    version: str


class ErrorResponse(BaseModel):
    detail: str


def _errors(*codes: int) -> dict[int | str, dict[str, Any]]:
    text = {
        401: "Missing or wrong API key (X-API-Key or Authorization: Bearer).",
        413: "A text, the batch or the body is over the server's limits.",
        429: "The queue is full; retry after a moment.",
        501: "Explanations need the PyTorch weights, which this export does not hold.",
        503: "Shutting down, or the request waited past its deadline.",
    }
    return {c: {"model": ErrorResponse, "description": text[c]} for c in codes}


# ---------------------------------------------------------------------------------------------- metrics
class ServingMetrics:
    """Prometheus metrics in a registry of their own (several apps may live in one process)."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.requests = Counter(
            "rationalign_requests",
            "HTTP requests by endpoint and status code.",
            ["endpoint", "status"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "rationalign_request_duration_seconds",
            "HTTP request latency by endpoint.",
            ["endpoint"],
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.batch_size = Histogram(
            "rationalign_batch_size",
            "Texts per micro-batch run by the model.",
            buckets=BATCH_BUCKETS,
            registry=self.registry,
        )
        self.batch_seconds = Histogram(
            "rationalign_batch_duration_seconds",
            "Model time per micro-batch.",
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.texts = Counter("rationalign_texts", "Texts classified.", registry=self.registry)
        self.queue_depth = Gauge(
            "rationalign_queue_depth", "Requests waiting for a micro-batch.", registry=self.registry
        )
        self.explain_in_flight = Gauge(
            "rationalign_explain_in_flight", "Explanations running or waiting.", registry=self.registry
        )
        self.uptime = Gauge(
            "rationalign_uptime_seconds", "Seconds since the app was created.", registry=self.registry
        )

    def on_batch(self, n_texts: int, seconds: float) -> None:
        self.batch_size.observe(n_texts)
        self.batch_seconds.observe(seconds)
        self.texts.inc(n_texts)


# ---------------------------------------------------------------------------------------------- config
@dataclass
class ServingConfig:
    api_key: str | None = None
    max_text_chars: int = 1000
    max_batch: int = 64
    queue_size: int = 256
    max_wait_ms: float = 2.0
    timeout_s: float = 10.0
    explain_waiting: int = 8

    @property
    def max_body_bytes(self) -> int:
        # Worst case JSON: every character outside the BMP, escaped as a surrogate pair \\uXXXX\\uXXXX
        # (12 bytes), plus quotes and commas per text and the envelope.
        return self.max_batch * (self.max_text_chars * 12 + 8) + 4096


class ServingState:
    """Everything the endpoints share: backend, batcher (started by the lifespan), explainer, metrics."""

    def __init__(self, backend: Backend, config: ServingConfig, explainer, metrics: ServingMetrics):
        self.backend = backend
        self.config = config
        self.explainer = explainer
        self.metrics = metrics
        self.batcher: MicroBatcher | None = None
        self.started = time.monotonic()
        self.stopping = False

    def start(self) -> None:
        self.stopping = False
        if self.batcher is None or not self.batcher.running:
            self.batcher = MicroBatcher(
                self.backend.logits,
                max_batch=self.config.max_batch,
                max_wait_ms=self.config.max_wait_ms,
                queue_size=self.config.queue_size,
                timeout_s=self.config.timeout_s,
                on_batch=self.metrics.on_batch,
            )

    def stop(self) -> None:
        self.stopping = True
        if self.batcher is not None:
            self.batcher.stop()


# ---------------------------------------------------------------------------------------------- middleware
Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]


class LimitsAndMetricsMiddleware:
    """Pure ASGI: refuse oversized bodies before parsing them (413), and count every response."""

    def __init__(self, app, state: ServingState):
        self.app = app
        self.state = state

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path = scope.get("path", "")
        endpoint = path if path in ENDPOINTS else "other"  # bounded label set, whatever clients send
        start = time.perf_counter()
        status = {"code": 500}

        async def counting_send(message: Message) -> None:
            if message["type"] == "http.response.start":
                status["code"] = message["status"]
            await send(message)

        try:
            limit = self.state.config.max_body_bytes
            if scope.get("method") in ("POST", "PUT", "PATCH"):
                body = await _read_bounded(receive, limit)
                if body is None:
                    response = JSONResponse(
                        {"detail": f"request body over {limit} bytes; send at most max_batch texts"},
                        status_code=413,
                    )
                    await response(scope, receive, counting_send)
                    return
                if not _is_utf8(body):
                    # FastAPI would answer 400 here; malformed input is 422 everywhere else in this API.
                    problem = {"type": "json_invalid", "loc": ["body"], "msg": "the body is not UTF-8 JSON"}
                    response = JSONResponse({"detail": [problem]}, status_code=422)
                    await response(scope, receive, counting_send)
                    return
                receive = _replay(body, receive)
            await self.app(scope, receive, counting_send)
        finally:
            metrics = self.state.metrics
            metrics.requests.labels(endpoint, str(status["code"])).inc()
            metrics.latency.labels(endpoint).observe(time.perf_counter() - start)


async def _read_bounded(receive: Receive, limit: int) -> bytes | None:
    """The whole request body, or None as soon as it exceeds ``limit`` bytes (chunked bodies too)."""
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            break
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            return None
        chunks.append(chunk)
        if not message.get("more_body", False):
            break
    return b"".join(chunks)


def _is_utf8(body: bytes) -> bool:
    try:
        body.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


def _replay(body: bytes, original: Receive) -> Receive:
    """Hand the already-read body to the app once; after that, the server's own events (disconnect)."""
    sent = False

    async def receive() -> Message:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await original()

    return receive


# ---------------------------------------------------------------------------------------------- app
def _explainer_for(backend: Backend, source, config: ServingConfig) -> object | None:
    from rationalign.serving.explain import Explainer

    limits = {"max_waiting": config.explain_waiting, "timeout_s": config.timeout_s}
    if isinstance(backend, TorchBackend):
        return Explainer(backend.classifier, copy_model=True, **limits)
    folder = Path(source)
    if has_torch_weights(folder):
        return Explainer(IntentClassifier.load(folder), copy_model=False, **limits)
    return None


def create_app(
    model: str | Path | IntentClassifier,
    *,
    api_key: str | None = None,
    max_text_chars: int = 1000,
    max_batch: int = 64,
    queue_size: int = 256,
    max_wait_ms: float = 2.0,
    backend: str = "torch",
    timeout_s: float = 10.0,
    threads: int | None = None,
    explain: bool = True,
) -> FastAPI:
    """A FastAPI app serving ``model`` (a model/export folder or an in-memory classifier).

    ``backend``: ``torch``, ``onnx`` or ``onnx-int8`` (the last two need an export folder). The batcher
    thread starts and stops with the app's lifespan (``uvicorn`` or ``with TestClient(app)``).
    """
    if backend not in BACKENDS:
        raise ModelError(f"unknown backend {backend!r}; fix: choose one of {', '.join(BACKENDS)}")
    if max_text_chars < 1 or max_batch < 1 or queue_size < 1 or max_wait_ms < 0 or timeout_s <= 0:
        raise ConfigError(
            "limits must be positive; fix: max_text_chars, max_batch, queue_size >= 1, timeout_s > 0, max_wait_ms >= 0"
        )
    engine = load_backend(model, backend, threads=threads)
    config = ServingConfig(api_key or None, max_text_chars, max_batch, queue_size, max_wait_ms, timeout_s)
    metrics = ServingMetrics()
    explainer = _explainer_for(engine, model, config) if explain else None
    state = ServingState(engine, config, explainer, metrics)
    labels = engine.label_space

    @asynccontextmanager
    async def lifespan(_: FastAPI):
        state.start()
        try:
            yield
        finally:
            state.stop()

    app = FastAPI(
        title="rationalign intent classifier",
        version=__version__,
        description=f"Model `{engine.model_name}` ({len(labels)} labels) on the `{engine.name}` backend.",
        lifespan=lifespan,
    )
    app.state.serving = state
    app.add_middleware(LimitsAndMetricsMiddleware, state=state)

    api_key_header = APIKeyHeader(name="X-API-Key", auto_error=False, description="The server's API key.")
    bearer = HTTPBearer(auto_error=False, description="The server's API key as a bearer token.")

    # Defaults, not Annotated[...]: the schemes are local, and string annotations resolve in module globals.
    async def require_key(  # async: no thread hop per request for a string compare
        key: str | None = Security(api_key_header),
        credentials: HTTPAuthorizationCredentials | None = Security(bearer),
    ) -> None:
        supplied = key if key is not None else (credentials.credentials if credentials else None)
        expected = config.api_key or ""
        if supplied is None or not hmac.compare_digest(supplied.encode(), expected.encode()):
            raise HTTPException(401, "missing or wrong API key", headers={"WWW-Authenticate": "Bearer"})

    guarded = [Depends(require_key)] if config.api_key else []
    auth_codes = (401,) if config.api_key else ()

    @app.exception_handler(BatcherError)
    async def _overloaded(_: Request, err: BatcherError) -> JSONResponse:
        return JSONResponse({"detail": str(err)}, status_code=err.status, headers={"Retry-After": "1"})

    def check_length(text: str) -> None:
        if len(text) > config.max_text_chars:
            raise HTTPException(
                413, f"a text has {len(text)} characters; the limit is {config.max_text_chars}"
            )

    @app.post(
        "/predict",
        response_model=PredictResponse,
        dependencies=guarded,
        responses=_errors(*auth_codes, 413, 429, 503),
        summary="Label, calibrated probability, top-k and abstain flag per text",
    )
    async def predict(body: PredictRequest) -> PredictResponse:
        start = time.perf_counter()
        if len(body.texts) > config.max_batch:
            raise HTTPException(413, f"{len(body.texts)} texts; the limit is {config.max_batch} per request")
        for text in body.texts:
            check_length(text)
        batcher = state.batcher
        if batcher is None or state.stopping:
            raise ShuttingDown("the server is not accepting work (starting or shutting down)")
        future = batcher.submit(body.texts)
        try:
            out = await asyncio.wait_for(asyncio.wrap_future(future), timeout=config.timeout_s + 5.0)
        except TimeoutError:
            future.cancel()
            raise HTTPException(503, "the model did not answer in time; the server is overloaded") from None
        probs = calibrated(out.rows, engine.temperature)
        k = min(body.top_k, len(labels))
        threshold = engine.abstain_threshold
        latency_ms = (time.perf_counter() - start) * 1000.0
        predictions = []
        for row in probs:
            order = np.argsort(-row, kind="stable")[:k]
            best = int(order[0])
            predictions.append(
                TextPrediction(
                    label=labels.name(best),
                    probability=float(row[best]),
                    abstain=threshold is not None and float(row[best]) < float(threshold),
                    top_k=[LabelScore(label=labels.name(int(i)), probability=float(row[i])) for i in order],
                    latency_ms=latency_ms,
                )
            )
        return PredictResponse(
            model=engine.model_name,
            backend=engine.name,
            predictions=predictions,
            batch_size=out.batch_size,
            queue_ms=out.wait_ms,
            compute_ms=out.compute_ms,
            latency_ms=(time.perf_counter() - start) * 1000.0,
        )

    @app.post(
        "/explain",
        response_model=ExplainResponse,
        dependencies=guarded,
        responses=_errors(*auth_codes, 413, 429, 501, 503),
        summary="Word attributions (gradient x input) of the predicted or a given label",
    )
    async def explain(body: ExplainRequest) -> ExplainResponse:
        start = time.perf_counter()
        check_length(body.text)
        if state.explainer is None:
            raise HTTPException(
                501, "this server has no PyTorch weights for explanations; serve a folder that has them"
            )
        target = None
        if body.target is not None:
            if body.target not in labels:
                raise RequestValidationError(
                    [
                        {
                            "type": "value_error",
                            "loc": ("body", "target"),
                            "msg": f"unknown label {body.target!r}",
                            "input": body.target,
                        }
                    ]
                )
            target = labels.id(body.target)
        if state.stopping:
            raise ShuttingDown("the server is shutting down")
        result = await run_in_threadpool(
            state.explainer.explain, body.text, detail=body.detail, k=body.k, target=target
        )
        shown = result.words if body.detail == "heatmap" else result.top
        return ExplainResponse(
            text=result.text,
            label=result.label,
            probability=result.probability,
            target=result.target,
            target_probability=result.target_probability,
            method=result.method,
            detail=body.detail,
            words=[WordScoreOut(**asdict(w)) for w in shown],
            counterfactual=CounterfactualOut(**asdict(result.counterfactual))
            if result.counterfactual
            else None,
            latency_ms=(time.perf_counter() - start) * 1000.0,
        )

    @app.get("/health", response_model=HealthResponse, summary="Model, labels, backend and uptime")
    async def health() -> HealthResponse:
        return HealthResponse(
            status="stopping" if state.stopping else "ok",
            model=engine.model_name,
            base_model=_base_model(engine),
            labels=len(labels),
            backend=engine.name,
            explain=state.explainer is not None,
            auth_required=config.api_key is not None,
            max_text_chars=config.max_text_chars,
            max_batch=config.max_batch,
            uptime_s=time.monotonic() - state.started,
            version=__version__,
        )

    @app.get(
        "/metrics",
        dependencies=guarded,
        response_class=Response,
        responses={
            200: {"content": {CONTENT_TYPE_LATEST: {}}, "description": "Prometheus text format."},
            **_errors(*auth_codes),
        },
        summary="Prometheus metrics: requests, latency, batch sizes, queue depth",
    )
    async def prometheus_metrics() -> Response:
        metrics.queue_depth.set(state.batcher.depth if state.batcher is not None else 0)
        metrics.explain_in_flight.set(state.explainer.in_flight if state.explainer is not None else 0)
        metrics.uptime.set(time.monotonic() - state.started)
        return Response(generate_latest(metrics.registry), media_type=CONTENT_TYPE_LATEST)

    _document_limits(app, config, labels)
    page = (STATIC_DIR / "index.html").read_text(encoding="utf-8")

    @app.get("/", response_class=HTMLResponse, include_in_schema=False)
    async def index() -> HTMLResponse:
        return HTMLResponse(page)

    return app


def _document_limits(app: FastAPI, config: ServingConfig, labels: LabelSpace) -> None:
    """Put this server's limits (maxItems/maxLength) and its label names into its OpenAPI spec.

    The request models carry no such bounds on purpose: a violation must answer 413 (over the limit),
    not pydantic's 422 (malformed), but clients and spec-driven tools should still see the limits.
    """
    default_openapi = app.openapi

    def openapi_with_limits() -> dict[str, Any]:
        if app.openapi_schema is None:
            schema = default_openapi()
            models = schema["components"]["schemas"]
            texts = models["PredictRequest"]["properties"]["texts"]
            texts["maxItems"] = config.max_batch
            texts["items"]["maxLength"] = config.max_text_chars
            explain = models["ExplainRequest"]["properties"]
            explain["text"]["maxLength"] = config.max_text_chars
            explain["target"]["anyOf"] = [{"type": "string", "enum": list(labels.names)}, {"type": "null"}]
        return app.openapi_schema

    app.openapi = openapi_with_limits  # type: ignore[method-assign]


def _base_model(engine: Backend) -> str | None:
    meta = engine.classifier.meta if isinstance(engine, TorchBackend) else getattr(engine, "meta", {})
    value = meta.get("base_model")
    return str(value) if value is not None else None


@contextmanager
def background_server(
    app: FastAPI, host: str = "127.0.0.1", port: int = 0, start_timeout_s: float = 20.0
) -> Iterator[str]:
    """Run ``app`` under uvicorn in a daemon thread; yields its base URL (port 0: a free port).

    For notebooks, benchmarks and tests. Stopping is graceful: in-flight requests finish, then the
    lifespan shuts the batcher down.
    """
    import uvicorn

    config = uvicorn.Config(app, host=host, port=port, log_level="warning", access_log=False, lifespan="on")
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, name="rationalign-uvicorn", daemon=True)
    thread.start()
    deadline = time.monotonic() + start_timeout_s
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            server.should_exit = True
            raise RuntimeError(f"uvicorn did not start on {host}:{port} within {start_timeout_s:.0f} s")
        time.sleep(0.01)
    bound = server.servers[0].sockets[0].getsockname()
    try:
        yield f"http://{bound[0]}:{bound[1]}"
    finally:
        server.should_exit = True
        thread.join(timeout=15)
