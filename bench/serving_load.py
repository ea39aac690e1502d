"""Load test of ``rationalign serve`` on loopback: throughput, latency and explicit backpressure.

The model is the shipped student ``IntentClassifier.from_base("minilm-l6", <77 Banking77 labels>)`` with
its new, *untrained* (random, seed 0) head: serving speed does not depend on the head's values. Requests are
single Banking77 test utterances. Each server runs in its own process (``serve`` from
``rationalign.serving.commands``, uvicorn, 127.0.0.1, ``--threads`` intra-op threads), the clients in this
one, so the two compete for the same 2 cores as real co-located clients would.

For each server setting:
- single: one client, sequential requests (after a warm-up): p50 / p99 end-to-end latency;
- load: ``--clients`` concurrent clients (threads, keep-alive connections) for ``--duration`` seconds:
  throughput of answered requests, p50 / p99 latency of answered (200) requests, responses by status
  (only 200 and the explicit 429 / 503 backpressure answers are acceptable; a refused client waits 20 ms
  before trying again), mean micro-batch size during the load phase from the server's /metrics.

    .venv/bin/python bench/serving_load.py              # ~4 min
    .venv/bin/python bench/serving_load.py --quick      # smoke run, results not written
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import os
import socket
import subprocess
import sys
import tempfile
import threading
import time
import warnings
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import httpx
import numpy as np
import torch
from prometheus_client.parser import text_string_to_metric_families

from _common import REPO_ROOT, Row, command_line, datasets_root, load_jsonl, machine_info, write_results
from rationalign.data.types import LabelSpace
from rationalign.models.classifier import IntentClassifier
from rationalign.serving.onnx_export import export_onnx

RESULTS = "serving"
DATASET = "banking77"
BACKOFF_S = 0.02  # after a refusal (429/503), a client waits this long before its next request
SERVER = (
    "import sys, typer\n"
    "from rationalign.serving.commands import register\n"
    "app = typer.Typer()\n"
    "register(app)\n"
    "app(sys.argv[1:])\n"
)


@dataclass(frozen=True)
class ServerSetting:
    label: str
    backend: str
    max_batch: int
    max_wait_ms: float
    queue_size: int = 256

    def describe(self, threads: int) -> str:
        batching = "no micro-batching" if self.max_batch == 1 else f"max_batch {self.max_batch}"
        return (
            f"{self.backend}, {batching}, max_wait {self.max_wait_ms:g} ms, queue {self.queue_size}, "
            f"{threads} thread(s)"
        )


SETTINGS = [
    ServerSetting("torch, micro-batching", "torch", 64, 2.0),
    ServerSetting("torch, no batching", "torch", 1, 0.0),
    ServerSetting("onnx fp32, micro-batching", "onnx", 64, 2.0),
    ServerSetting("onnx-int8, micro-batching", "onnx-int8", 64, 2.0),
    # A queue shorter than the number of clients: overload must turn into explicit 429s, not a pile-up.
    ServerSetting("onnx-int8, queue 16", "onnx-int8", 64, 2.0, queue_size=16),
]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def server_process(folder: Path, setting: ServerSetting, threads: int):
    port = free_port()
    args = [
        sys.executable, "-c", SERVER, "serve", str(folder), "--port", str(port), "--backend", setting.backend,
        "--max-batch", str(setting.max_batch), "--max-wait-ms", str(setting.max_wait_ms),
        "--queue-size", str(setting.queue_size), "--threads", str(threads), "--log-level", "warning",
    ]  # fmt: skip
    env = {**os.environ, "TOKENIZERS_PARALLELISM": "false", "OMP_NUM_THREADS": str(threads)}
    proc = subprocess.Popen(args, cwd=REPO_ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"server exited: {proc.stderr.read().decode(errors='replace')[-3000:]}")
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"{url}/health", timeout=2).status_code == 200:
                    break
            if time.monotonic() > deadline:
                raise TimeoutError("server did not come up in 120 s")
            time.sleep(0.2)
        yield url
    finally:
        proc.terminate()  # our own child, by its pid
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=20)


def single_client(url: str, texts: list[str], n: int, warmup: int = 20) -> dict[str, list[float]]:
    """End-to-end latency of sequential requests, and the server's own split of it."""
    out: dict[str, list[float]] = {"client": [], "server": [], "compute": []}
    with httpx.Client(base_url=url, timeout=30) as http:
        for i in range(warmup + n):
            t0 = time.perf_counter()
            r = http.post("/predict", json={"texts": [texts[i % len(texts)]]})
            elapsed = (time.perf_counter() - t0) * 1000.0
            r.raise_for_status()
            if i >= warmup:
                body = r.json()
                out["client"].append(elapsed)
                out["server"].append(body["latency_ms"])  # handler: validation .. response built
                out["compute"].append(body["compute_ms"])  # the model call on the micro-batch
    return out


def load_test(
    url: str, texts: list[str], clients: int, duration_s: float
) -> tuple[Counter, list[float], float]:
    statuses: Counter = Counter()
    latencies: list[float] = []
    lock = threading.Lock()
    start_barrier = threading.Barrier(clients + 1, timeout=60)
    window: dict[str, float] = {}

    def client(seed: int) -> None:
        rng = np.random.default_rng(seed)
        local_status: Counter = Counter()
        local_lat: list[float] = []
        with httpx.Client(base_url=url, timeout=30, limits=httpx.Limits(max_connections=1)) as http:
            start_barrier.wait()
            end = window["end"]
            for _ in range(1_000_000):  # bounded; the deadline ends it long before
                if time.perf_counter() >= end:
                    break
                t0 = time.perf_counter()
                try:
                    r = http.post("/predict", json={"texts": [texts[int(rng.integers(len(texts)))]]})
                    code = str(r.status_code)
                except httpx.HTTPError as err:
                    code = type(err).__name__
                local_status[code] += 1
                if code == "200":
                    local_lat.append((time.perf_counter() - t0) * 1000.0)
                else:
                    time.sleep(BACKOFF_S)  # an eager but not hostile client
        with lock:
            statuses.update(local_status)
            latencies.extend(local_lat)

    threads = [threading.Thread(target=client, args=(i,), daemon=True) for i in range(clients)]
    for t in threads:
        t.start()
    t_start = time.perf_counter()
    window["end"] = t_start + duration_s  # set before the barrier releases the clients
    start_barrier.wait()
    for t in threads:
        t.join(timeout=duration_s + 60)
    elapsed = time.perf_counter() - t_start
    return statuses, latencies, elapsed


def batch_counters(url: str) -> tuple[float, float]:
    """(texts, batches) the server has run so far, from its /metrics."""
    text = httpx.get(f"{url}/metrics", timeout=10).text
    values = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            if s.name in ("rationalign_batch_size_sum", "rationalign_batch_size_count"):
                values[s.name] = s.value
    return values.get("rationalign_batch_size_sum", 0.0), values.get("rationalign_batch_size_count", 0.0)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--clients", type=int, default=50)
    parser.add_argument("--duration", type=float, default=30.0, help="seconds of load per server setting")
    parser.add_argument("--single", type=int, default=300, help="sequential requests for single latency")
    parser.add_argument("--threads", type=int, default=1, help="server intra-op threads (torch / ORT)")
    parser.add_argument("--only", default="", help="run the server settings whose label contains this")
    parser.add_argument("--quick", action="store_true", help="tiny run, nothing written")
    args = parser.parse_args(argv)
    if args.quick:
        args.clients, args.duration, args.single = 8, 3.0, 30
    warnings.simplefilter("ignore")
    torch.set_num_threads(1)
    load_at_start = os.getloadavg()[0]
    test_texts, test_labels = load_jsonl(datasets_root() / DATASET / "test.jsonl")
    space = LabelSpace.from_labels(test_labels)
    rows: list[Row] = []
    today = dt.date.today().isoformat()
    machine = (
        f"{machine_info()} (client), server {args.threads} thread(s), load avg {load_at_start:.1f} at start"
    )
    command = command_line()

    def add(setting: str, method: str, metric: str, value: float) -> None:
        rows.append(Row(DATASET, setting, method, metric, float(value), 0.0, 1, command, today, machine))

    with tempfile.TemporaryDirectory(prefix="serving-load-") as tmp:
        student = IntentClassifier.from_base("minilm-l6", space, seed=0)  # random head: speed only
        model_dir = student.save(Path(tmp) / "student")
        export_dir = export_onnx(model_dir, Path(tmp) / "export", int8=True).out_dir
        print(f"machine: {machine}")
        header = f"{'server':<28}{'1-client p50':>13}{'p99':>8}{'server':>8}{'model':>8}{'rps':>8}{'p50':>8}{'p99':>9}{'batch':>7}  statuses"
        print(header)
        for setting in [s for s in SETTINGS if args.only in s.label]:
            folder = model_dir if setting.backend == "torch" else export_dir
            with server_process(folder, setting, args.threads) as url:
                single = single_client(url, test_texts, args.single)
                texts_before, batches_before = batch_counters(url)
                statuses, latencies, elapsed = load_test(url, test_texts, args.clients, args.duration)
                texts_after, batches_after = batch_counters(url)  # the load phase only
                mean_batch = (texts_after - texts_before) / max(1.0, batches_after - batches_before)
            ok = statuses.get("200", 0)
            lat = np.asarray(latencies)
            s50, s99 = np.percentile(single["client"], 50), np.percentile(single["client"], 99)
            server50, compute50 = np.percentile(single["server"], 50), np.percentile(single["compute"], 50)
            l50, l99 = np.percentile(lat, 50), np.percentile(lat, 99)
            print(
                f"{setting.label:<28}{s50:>13.1f}{s99:>8.1f}{server50:>8.1f}{compute50:>8.1f}{ok / elapsed:>8.1f}{l50:>8.1f}{l99:>9.1f}"
                f"{mean_batch:>7.1f}  {dict(statuses)}"
            )
            single_setting = f"serving: 1 client sequential, {args.single} requests"
            load_setting = f"serving: {args.clients} clients x {args.duration:g} s"
            method = f"rationalign serve ({setting.describe(args.threads)})"
            add(single_setting, method, "p50_ms", s50)
            add(single_setting, method, "p99_ms", s99)
            add(single_setting, method, "server_handler_p50_ms", server50)
            add(single_setting, method, "model_compute_p50_ms", compute50)
            add(load_setting, method, "throughput_rps", ok / elapsed)
            add(load_setting, method, "p50_ms", l50)
            add(load_setting, method, "p99_ms", l99)
            add(load_setting, method, "mean_batch_size", mean_batch)
            add(load_setting, method, "responses_200", ok)
            add(load_setting, method, "responses_429", statuses.get("429", 0))
            add(load_setting, method, "responses_503", statuses.get("503", 0))
            other = sum(v for k, v in statuses.items() if k not in ("200", "429", "503"))
            add(load_setting, method, "responses_other", other)
            if other:
                print(f"  unexpected responses: {dict(statuses)}")
    if args.quick:
        print("--quick: results not written")
        return
    print(f"wrote {write_results(RESULTS, rows)}")


if __name__ == "__main__":
    main()
