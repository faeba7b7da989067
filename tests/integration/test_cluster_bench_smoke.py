"""The cluster benchmark at smoke sizes (`python -m bench --only cluster --smoke`): classify latency idle and
during a training run on one platform, then one small Tune search on 1 and on 2 training nodes of a
`ray.cluster_utils.Cluster`, so the benchmark code cannot rot; the full run is for `make bench ONLY=cluster`."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bench.common import data_dir, run_smoke
from bench.datasets import MNIST_FILES

pytestmark = [pytest.mark.ray, pytest.mark.timeout(600)]


def test_cluster_benchmark_smoke(tmp_path: Path) -> None:
    mnist = data_dir() / "mnist"
    if not all((mnist / name).is_file() for pair in MNIST_FILES.values() for name in pair):
        pytest.skip(f"no MNIST under {data_dir()} (set CLASSIFLY_BENCH_DATA)")
    done = run_smoke("cluster", tmp_path, 540)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-5000:]

    document = json.loads((tmp_path / "results" / "cluster.json").read_text())
    assert document["benchmark"] == "cluster" and document["settings"]["smoke"] is True
    values = {(r["system"], r["metric"]): r["value"] for r in document["results"]}
    for window in ("idle", "training", "idle_after"):
        assert values[("classifly", f"{window}.answered")] > 0, document.get("notes")
        assert values[("classifly", f"{window}.p99_ms")] >= values[("classifly", f"{window}.p50_ms")] > 0
    assert values[("classifly", "node.classifly_train")] == values[("classifly", "trial.cpus")] == 1.0
    assert values[("classifly", "training.window_share_running")] > 0
    assert values[("tune", "search.1_node.nodes_used")] == 1
    assert values[("tune", "search.2_nodes.trials_per_node")] == [1, 1]  # one trial on each training node
    assert values[("tune", "search.1_node.trial_errors")] == values[("tune", "search.2_nodes.trial_errors")] == 0
    targets = {t["metric"]: t for t in document["targets"]}
    assert set(targets) == {"p99_training_vs_idle", "search.2_nodes.nodes_used"}
    assert targets["search.2_nodes.nodes_used"]["met"] is True
    assert any("same 2 physical cores" in note for note in document["notes"])
    assert any(note.startswith("Load average") for note in document["notes"])
    report = (tmp_path / "RESULTS.md").read_text()
    assert "## cluster" in report and "cluster-latency.png" in report
