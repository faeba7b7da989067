"""The benchmarks at smoke sizes, end to end (`python -m bench --smoke`), so the benchmark code cannot rot."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from bench.common import data_dir
from bench.datasets import CIFAR10_FILES, MNIST_FILES

pytestmark = pytest.mark.ray

REPO_ROOT = Path(__file__).resolve().parents[2]
SMOKE_IMAGES = 200  # 10 per class and split, 10 classes, 2 splits
RUN_DEADLINE_S = 300


def _available() -> dict[str, bool]:
    data = data_dir()
    return {
        "mnist": all((data / "mnist" / name).is_file() for pair in MNIST_FILES.values() for name in pair),
        "cifar10": all((data / "cifar10" / name).is_file() for name in CIFAR10_FILES.values()),
    }


def test_import_benchmark_smoke(tmp_path: Path) -> None:
    available = _available()
    if not any(available.values()):
        pytest.skip(f"no MNIST or CIFAR-10 under {data_dir()} (set CLASSIFLY_BENCH_DATA)")
    results_dir = tmp_path / "results"
    command = [sys.executable, "-m", "bench", "--only", "import", "--smoke"]
    command += ["--results", str(results_dir), "--cache", str(tmp_path / "cache")]
    done = subprocess.run(
        command,
        cwd=REPO_ROOT,
        env={**os.environ, "RAY_AUTH_MODE": "token"},
        capture_output=True,
        text=True,
        timeout=RUN_DEADLINE_S,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-5000:]

    document = json.loads((results_dir / "import.json").read_text())
    assert set(document) <= {"benchmark", "when", "machine", "settings", "results", "targets", "notes"}
    assert {"benchmark", "when", "machine", "settings", "results", "targets"} <= set(document)
    assert document["benchmark"] == "import"
    assert document["when"].endswith("Z")
    assert set(document["machine"]) == {"cpus", "gpu", "python"}
    assert document["machine"]["gpu"] is None
    assert document["settings"]["smoke"] is True
    for result in document["results"]:
        assert {"system", "metric", "value"} <= set(result) <= {"system", "metric", "value", "unit"}
    for target in document["targets"]:
        assert set(target) == {"name", "metric", "value", "op", "target", "met"}
        assert isinstance(target["met"], bool)
    assert all(isinstance(note, str) for note in document.get("notes", []))

    values = {(r["system"], r["metric"]): r["value"] for r in document["results"]}
    for dataset, present in available.items():
        if not present:
            continue
        assert values[("classifly", f"{dataset}.accepted")] == SMOKE_IMAGES, document.get("notes")
        assert values[("classifly", f"{dataset}.import_seconds")] > 0
        assert values[("plain-python", f"{dataset}.images_per_s")] > 0
        assert values[("classifly", f"{dataset}.memory_peak_total_mb")] > 0
        accepted = next(t for t in document["targets"] if t["metric"] == f"{dataset}.accepted")
        assert accepted["met"] is True

    report = (tmp_path / "RESULTS.md").read_text()
    assert "## import" in report and "| met |" in report
    if (results_dir / "import-seconds.png").exists():
        assert "import-seconds.png" in report


def test_training_benchmark_smoke(tmp_path: Path) -> None:
    """Quick mode on MNIST (10 pictures per class and split, 20 s budgets): the platform, AutoKeras and the
    hand-written script each train and are evaluated, and the results come out in the benchmark shape."""
    if not _available()["mnist"]:
        pytest.skip(f"no MNIST under {data_dir()} (set CLASSIFLY_BENCH_DATA)")
    results_dir = tmp_path / "results"
    command = [sys.executable, "-m", "bench", "--only", "training", "--quick", "--datasets", "mnist"]
    command += ["--results", str(results_dir), "--cache", str(tmp_path / "cache")]
    done = subprocess.run(
        command,
        cwd=REPO_ROOT,
        env={**os.environ, "RAY_AUTH_MODE": "token"},
        capture_output=True,
        text=True,
        timeout=RUN_DEADLINE_S,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-5000:]

    document = json.loads((results_dir / "training.json").read_text())
    assert document["benchmark"] == "training" and document["settings"]["smoke"] is True
    assert document["settings"]["datasets"] == ["mnist"]
    for target in document["targets"]:
        assert set(target) == {"name", "metric", "value", "op", "target", "met"}
        assert isinstance(target["met"], bool)
    values = {(r["system"], r["metric"]): r["value"] for r in document["results"]}
    notes = document.get("notes", [])
    assert 0.0 <= values[("classifly", "mnist.test_accuracy")] <= 1.0, notes
    assert values[("classifly", "mnist.train_seconds")] > 0
    assert values[("classifly", "mnist.peak_memory_mb")] > 0
    assert 0.0 <= values[("handwritten-keras", "mnist.test_accuracy")] <= 1.0, notes
    if importlib.util.find_spec("autokeras") is not None:
        assert 0.0 <= values[("autokeras", "mnist.test_accuracy")] <= 1.0, notes
    else:  # `make test` does not install the bench extra: the AutoML baseline says why it did not run
        assert any("did not finish" in note and "bench" in note for note in notes), notes
    report = (tmp_path / "RESULTS.md").read_text()
    assert "## training" in report and "MNIST: Classifly test accuracy" in report
