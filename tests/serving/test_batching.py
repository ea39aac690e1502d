"""MicroBatcher: batches concurrent requests, keeps order, and pushes back instead of piling up."""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest

from rationalign.serving.batching import MicroBatcher, QueueFull, RequestTimeout, ShuttingDown


class Recorder:
    """A batch function that records batch sizes; ``gate`` (if set) blocks it until released."""

    def __init__(self, gate: threading.Event | None = None, delay_s: float = 0.0):
        self.sizes: list[int] = []
        self.gate = gate
        self.delay_s = delay_s
        self.started = threading.Event()

    def __call__(self, texts: list[str]) -> np.ndarray:
        self.started.set()
        if self.gate is not None:
            assert self.gate.wait(10), "test gate never opened"
        if self.delay_s:
            time.sleep(self.delay_s)
        self.sizes.append(len(texts))
        # Row i encodes its text, so every caller can check it got its own rows back.
        return np.array([[float(len(t)), float(hash(t) % 1000)] for t in texts])


@pytest.fixture()
def make_batcher():
    made: list[MicroBatcher] = []

    def make(fn, **kwargs) -> MicroBatcher:
        b = MicroBatcher(fn, **kwargs)
        made.append(b)
        return b

    yield make
    for b in made:
        b.stop(timeout_s=5)


def expected(texts: list[str]) -> np.ndarray:
    return np.array([[float(len(t)), float(hash(t) % 1000)] for t in texts])


def test_single_request_gets_its_rows(make_batcher):
    batcher = make_batcher(Recorder(), max_batch=8, max_wait_ms=1)
    texts = ["a", "bb", "ccc"]
    np.testing.assert_array_equal(batcher.run(texts), expected(texts))


def test_concurrent_requests_share_a_batch_and_keep_order(make_batcher):
    gate = threading.Event()
    fn = Recorder(gate=gate)
    batcher = make_batcher(fn, max_batch=64, max_wait_ms=50, queue_size=64)
    first = batcher.submit(["warm-up"])  # occupies the worker until the gate opens
    assert fn.started.wait(5)
    futures = [batcher.submit([f"text {i}", f"other {i} {'x' * i}"]) for i in range(10)]
    gate.set()
    first.result(timeout=5)
    outputs = [f.result(timeout=5) for f in futures]
    for i, out in enumerate(outputs):
        np.testing.assert_array_equal(out.rows, expected([f"text {i}", f"other {i} {'x' * i}"]))
        assert out.batch_size == 20  # all ten waiting requests ran as one batch
    assert fn.sizes == [1, 20]
    assert batcher.stats.max_batch_seen == 20


def test_batches_never_exceed_max_batch(make_batcher):
    gate = threading.Event()
    fn = Recorder(gate=gate)
    batcher = make_batcher(fn, max_batch=5, max_wait_ms=20, queue_size=64)
    batcher.submit(["hold"])
    assert fn.started.wait(5)
    futures = [batcher.submit([f"{i}-{j}" for j in range(3)]) for i in range(6)]  # 18 texts, 3 per request
    gate.set()
    for i, f in enumerate(futures):
        np.testing.assert_array_equal(f.result(timeout=5).rows, expected([f"{i}-{j}" for j in range(3)]))
    # A request is never split, so each batch holds one 3-text request (3 + 3 > 5).
    assert fn.sizes[1:] == [3] * 6


def test_full_queue_refuses_immediately(make_batcher):
    gate = threading.Event()
    fn = Recorder(gate=gate)
    batcher = make_batcher(fn, max_batch=1, max_wait_ms=0, queue_size=2)
    running = batcher.submit(["running"])
    assert fn.started.wait(5)
    waiting = [batcher.submit(["q1"]), batcher.submit(["q2"])]
    assert batcher.depth == 2
    start = time.perf_counter()
    with pytest.raises(QueueFull) as info:
        batcher.submit(["one too many"])
    assert time.perf_counter() - start < 0.5  # backpressure is immediate, not a wait
    assert info.value.status == 429
    gate.set()
    for f in [running, *waiting]:
        f.result(timeout=5)


def test_request_past_its_deadline_is_dropped_unrun(make_batcher):
    gate = threading.Event()
    fn = Recorder(gate=gate)
    batcher = make_batcher(fn, max_batch=1, max_wait_ms=0, queue_size=4)
    batcher.submit(["running"])
    assert fn.started.wait(5)
    late = batcher.submit(["late"], timeout_s=0.05)
    time.sleep(0.2)
    gate.set()
    with pytest.raises(RequestTimeout) as info:
        late.result(timeout=5)
    assert info.value.status == 503
    assert fn.sizes == [1]  # only the running request reached the model
    assert batcher.stats.timeouts == 1


def test_stop_fails_pending_and_refuses_new_work(make_batcher):
    gate = threading.Event()
    fn = Recorder(gate=gate)
    batcher = make_batcher(fn, max_batch=1, max_wait_ms=0, queue_size=8)
    running = batcher.submit(["running"])
    assert fn.started.wait(5)
    pending = [batcher.submit([f"p{i}"]) for i in range(3)]
    stopper = threading.Thread(target=batcher.stop, kwargs={"timeout_s": 5})
    stopper.start()
    time.sleep(0.05)
    gate.set()  # let the running batch finish so the worker can exit
    stopper.join(10)
    assert not stopper.is_alive()
    running.result(timeout=5)  # work already running completes
    for f in pending:
        with pytest.raises(ShuttingDown):
            f.result(timeout=5)
    with pytest.raises(ShuttingDown):
        batcher.submit(["after stop"])
    assert not batcher.running


def test_errors_reach_every_request_of_the_batch(make_batcher):
    gate = threading.Event()
    calls = {"n": 0}

    def flaky(texts):
        calls["n"] += 1
        if calls["n"] == 1:
            assert gate.wait(10)
            return np.zeros((len(texts), 1))
        raise RuntimeError("model exploded")

    batcher = make_batcher(flaky, max_batch=16, max_wait_ms=30)
    first = batcher.submit(["hold"])
    time.sleep(0.05)
    futures = [batcher.submit([f"t{i}"]) for i in range(3)]
    gate.set()
    first.result(timeout=5)
    for f in futures:
        with pytest.raises(RuntimeError, match="exploded"):
            f.result(timeout=5)
    # The worker survives a failing batch.
    calls["n"] = 0
    gate.set()
    np.testing.assert_array_equal(batcher.run(["again"]), np.zeros((1, 1)))


def test_wrong_row_count_is_an_error(make_batcher):
    batcher = make_batcher(lambda texts: np.zeros((len(texts) + 1, 2)), max_batch=4, max_wait_ms=0)
    with pytest.raises(RuntimeError, match="rows"):
        batcher.run(["a"])


def test_invalid_arguments():
    with pytest.raises(ValueError):
        MicroBatcher(lambda t: t, max_batch=0)
    batcher = MicroBatcher(lambda texts: np.zeros((len(texts), 1)), max_batch=2)
    try:
        with pytest.raises(ValueError):
            batcher.submit([])
        with pytest.raises(ValueError):
            batcher.submit(["a", "b", "c"])
    finally:
        batcher.stop()


def test_lone_request_runs_at_once_but_company_is_waited_for(make_batcher):
    fn = Recorder(delay_s=0.05)  # every batch takes 50 ms
    batcher = make_batcher(fn, max_batch=64, max_wait_ms=100)
    alone = batcher.submit(["alone"]).result(timeout=5)
    assert alone.batch_size == 1
    assert alone.wait_ms < 50  # not held for the 100 ms window: nothing else was in flight
    first = batcher.submit(["a"])
    time.sleep(0.01)
    second = batcher.submit(["b"])  # arrives while "a" runs: worth waiting for company
    time.sleep(0.01)
    third = batcher.submit(["c"])
    assert first.result(timeout=5).batch_size == 1
    assert second.result(timeout=5).batch_size == third.result(timeout=5).batch_size == 2
    assert second.result().wait_ms >= 100  # held the batch open for the full window
    assert batcher.in_flight == 0
