"""The serving benchmark's own parts, in seconds: the load generator against a real local HTTP server (counts,
errors, the time cap), percentiles, the targets it derives, and the results document it writes. The whole
benchmark at smoke sizes runs with `python -m bench --only serving --smoke`.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import numpy as np
import pytest

from bench import serving_bench
from bench.common import Result, write_results
from bench.serving_bench import Load, _targets, run_load


class Handler(BaseHTTPRequestHandler):
    """200 for /ok (after reading the multipart body), 500 for anything else."""

    seen: list[int] = []

    def do_POST(self) -> None:  # noqa: N802 - http.server's name
        body = self.rfile.read(int(self.headers["Content-Length"]))
        Handler.seen.append(body.count(b'name="files"'))
        status = 200 if self.path == "/ok" else 500
        self.send_response(status)
        self.send_header("Content-Length", "2")
        self.end_headers()
        self.wfile.write(b"{}")

    def log_message(self, *args) -> None:
        pass


@pytest.fixture
def server() -> Iterator[str]:
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    Handler.seen = []
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()
    httpd.server_close()


def test_the_load_generator_counts_answers_latencies_and_pictures(server) -> None:
    pictures = [("a.png", b"a" * 10), ("b.png", b"b" * 10)]

    done = run_load(f"{server}/ok", {}, pictures, concurrency=4, requests=20, max_seconds=30, per_request=3)

    assert (done.requests, done.ok, done.errors) == (20, 20, 0)
    assert len(done.latencies_ms) == 20 and all(ms > 0 for ms in done.latencies_ms)
    assert Handler.seen == [3] * 20  # three files in every request
    assert done.throughput and done.pictures_per_s == pytest.approx(done.throughput * 3)


def test_the_load_generator_counts_errors_and_keeps_the_first(server) -> None:
    done = run_load(f"{server}/fail", {}, [("a.png", b"a")], concurrency=2, requests=6, max_seconds=30)

    assert (done.ok, done.errors) == (0, 6) and done.first_error.startswith("HTTP 500")
    assert done.throughput is None and done.percentile(0.5) is None


def test_the_time_cap_stops_new_requests(server) -> None:
    done = run_load(f"{server}/ok", {}, [("a.png", b"a")], concurrency=1, requests=10_000, max_seconds=0)

    assert done.requests <= 1  # the first client checks the (passed) deadline before sending


def test_percentiles_and_targets() -> None:
    def load(seconds: float, ok: int, latencies: list[float], requests: int | None = None) -> Load:
        return Load(requests=requests or ok, ok=ok, seconds=seconds, latencies_ms=latencies)

    assert load(1, 5, [5, 1, 3, 2, 4]).percentile(0.5) == 3
    measured = {
        ("classifly", 1): load(1, 10, [10.0] * 10),
        ("classifly", 32): load(1, 300, [1.0] * 300),
        ("plain-fastapi-compiled", 32): load(1, 100, [1.0] * 100),
        ("classifly", 256): load(20, 10_000, [1.0] * 10_000),
    }
    raw = {"single_ms": 1.0, "batched_ips": 1000.0}

    goals = {
        goal.metric: goal for goal in _targets("mnist", raw, measured, Load(ok=10, seconds=1, pictures_per_request=64))
    }

    assert goals["mnist.c1.p50_ms"].met and goals["mnist.c1.p50_ms"].target == 16.0
    assert goals["mnist.c32.throughput_vs_plain_compiled"].value == 3.0
    assert goals["mnist.c256.seconds"].met and goals["mnist.c256.errors"].met
    assert goals["mnist.many.vs_raw_batched"].value == pytest.approx(0.64)
    measured[("classifly", 256)] = load(20, 9_999, [1.0] * 9_999, requests=10_000)  # one failed: not met
    goals = {goal.metric: goal for goal in _targets("mnist", raw, measured, Load())}
    assert not goals["mnist.c256.seconds"].met and not goals["mnist.c256.errors"].met
    flowers = {goal.metric: goal for goal in _targets("flowers", raw, measured, Load())}
    assert flowers["flowers.c32.throughput_vs_raw_batched"].value == pytest.approx(0.3)
    assert not flowers["flowers.c32.throughput_vs_raw_batched"].met


def test_results_are_written_in_the_benchmarks_shape(tmp_path) -> None:
    measured = {("classifly", 1): Load(requests=2, ok=2, seconds=1, latencies_ms=[3.0, 5.0])}
    results = serving_bench._load_results("classifly", "mnist", 1, measured[("classifly", 1)])
    results.append(Result("raw-model", "mnist.single_ms", 1.2, "ms"))

    path = write_results("serving", {"smoke": True}, results, [], ["note"], results_dir=tmp_path / "results")

    document = json.loads(path.read_text())
    values = {(r["system"], r["metric"]): r["value"] for r in document["results"]}
    assert values[("classifly", "mnist.c1.throughput_rps")] == 2.0 and values[("classifly", "mnist.c1.errors")] == 0
    assert "## serving" in (tmp_path / "RESULTS.md").read_text()


def test_the_plain_server_decodes_and_answers_with_the_chosen_path() -> None:
    from fastapi.testclient import TestClient

    from bench.serving_plain import Loaded, build_server
    from pipelines.images import PreprocessingPolicy
    from tests.factories import make_image

    seen: list[tuple[str, tuple[int, ...]]] = []

    def path(name: str, answer: list[float]):
        def predict(images: np.ndarray) -> np.ndarray:
            seen.append((name, images.shape))
            return np.tile([answer], (len(images), 1))

        return predict

    loaded = Loaded(PreprocessingPolicy(16, "rgb", "stretch"), ("cat", "dog"), path("compiled", [0.2, 0.8]),
                    path("predict", [0.9, 0.1]))  # fmt: skip
    for mode, label in (("compiled", "dog"), ("predict", "cat")):
        with TestClient(build_server(loaded, mode)) as client:
            answer = client.post("/classify", files={"file": ("a.png", make_image((200, 10, 10), (30, 20)))})
        assert answer.status_code == 200, answer.text
        assert answer.json()["label"] == label
    assert seen == [("compiled", (1, 16, 16, 3)), ("predict", (1, 16, 16, 3))]
