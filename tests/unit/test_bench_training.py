"""The training benchmark's pieces without a platform or a training run: zips, decoding for the baselines,
result collection and targets, the report, the hard timeout."""

from __future__ import annotations

import gzip
import json
import sys
import time
import zipfile
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from bench import training_bench
from bench.__main__ import parse_args
from bench.common import write_results
from bench.datasets import FASHION_CLASSES, FLOWERS_FILE, fashion_mnist_png_zip, flowers_zip
from bench.peers import holdout, load_zip_arrays
from bench.training_bench import ClassiflyRun, PeerRun, collect, read_curve, run_peer
from tests.factories import make_image


def _write_idx(path: Path, array: np.ndarray) -> None:
    header = bytes([0, 0, 0x08, array.ndim]) + b"".join(int(d).to_bytes(4, "big") for d in array.shape)
    path.write_bytes(gzip.compress(header + array.astype(np.uint8).tobytes()))


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    """A shared-data folder in miniature: 3 flower classes of 10 photos, and a 2-per-class Fashion-MNIST."""
    root = tmp_path / "data"
    (root / "tf_flowers").mkdir(parents=True)
    with zipfile.ZipFile(root / "tf_flowers" / FLOWERS_FILE, "w") as archive:
        for c, name in enumerate(("daisy", "roses", "tulips")):
            for i in range(10):
                picture = make_image((40 * c + 20, 100, 200), size=(60 + i, 40), fmt="JPEG", mark=i)
                archive.writestr(f"{name}/{i:04d}.jpg", picture)
    fashion = root / "fashion-mnist"
    fashion.mkdir()
    rng = np.random.default_rng(0)
    for split, count in (("train", 20), ("t10k", 10)):
        labels = np.arange(count) % 10
        _write_idx(fashion / f"{split}-images-idx3-ubyte.gz", rng.integers(0, 255, (count, 28, 28)))
        _write_idx(fashion / f"{split}-labels-idx1-ubyte.gz", labels)
    return root


def _layout(path: Path) -> Counter:
    with zipfile.ZipFile(path) as archive:
        return Counter(tuple(n.split("/")[:2]) for n in archive.namelist() if not n.endswith("/"))


def test_flowers_zip_splits_each_class_80_20_the_same_way_every_time(data_dir: Path, tmp_path: Path) -> None:
    built = flowers_zip(data_dir, tmp_path / "cache")

    assert built.images == 30 and built.classes == 3 and built.per_split == {"train": 24, "test": 6}
    assert _layout(built.path) == {
        (s, c): n for c in ("daisy", "roses", "tulips") for s, n in (("train", 8), ("test", 2))
    }
    with zipfile.ZipFile(built.path) as archive:
        first = sorted(archive.namelist())
    again = flowers_zip(data_dir, tmp_path / "other-cache")
    with zipfile.ZipFile(again.path) as archive:
        assert sorted(archive.namelist()) == first
    assert flowers_zip(data_dir, tmp_path / "cache").cached


def test_flowers_zip_limit_applies_per_class_and_split(data_dir: Path, tmp_path: Path) -> None:
    built = flowers_zip(data_dir, tmp_path / "cache", limit_per_class=1)

    assert built.per_split == {"train": 3, "test": 3}


def test_fashion_mnist_zip_names_its_class_folders(data_dir: Path, tmp_path: Path) -> None:
    built = fashion_mnist_png_zip(data_dir, tmp_path / "cache")

    assert built.per_split == {"train": 20, "test": 10} and built.classes == 10
    assert {label for _, label in _layout(built.path)} == set(FASHION_CLASSES)


def test_baselines_decode_the_same_zip_into_arrays(data_dir: Path, tmp_path: Path) -> None:
    gray = load_zip_arrays(fashion_mnist_png_zip(data_dir, tmp_path / "cache").path, side=None, color="L")
    photos = load_zip_arrays(flowers_zip(data_dir, tmp_path / "cache").path, side=48, color="RGB")

    assert gray.x_train.shape == (20, 28, 28, 1) and gray.x_test.shape == (10, 28, 28, 1)
    assert gray.class_names == sorted(FASHION_CLASSES) and set(gray.y_train) == set(range(10))
    assert photos.x_train.shape == (24, 48, 48, 3) and photos.x_train.dtype == np.uint8
    assert photos.class_names == ["daisy", "roses", "tulips"] and np.bincount(photos.y_test).tolist() == [2, 2, 2]


def test_holdout_is_stratified_disjoint_and_seeded() -> None:
    x = np.arange(100).reshape(100, 1, 1, 1)
    y = np.repeat(np.arange(5), 20)  # class-sorted, as CIFAR's and the flowers' zips are

    x_fit, y_fit, x_val, y_val = holdout(x, y, 0.2)

    assert np.bincount(y_val).tolist() == [4] * 5 and len(y_fit) == 80
    assert not set(x_fit.ravel()) & set(x_val.ravel())
    assert np.array_equal(holdout(x, y, 0.2)[2], x_val)


def test_read_curve_skips_a_line_cut_short_by_a_kill(tmp_path: Path) -> None:
    events = tmp_path / "events.jsonl"
    events.write_text('{"t": 5.0, "val_accuracy": 0.5}\n{"t": 9.0, "val_accuracy": null}\n{"t": 12.0, "val_a')

    assert read_curve(events) == [(5.0, 0.5)]
    assert read_curve(tmp_path / "missing.jsonl") == []


def test_a_baseline_that_hangs_is_killed_at_the_hard_timeout(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setattr(training_bench, "hard_timeout", lambda budget, quick: 1.0)
    hang = [sys.executable, "-c", "import time; time.sleep(60)"]
    started = time.perf_counter()

    peer = run_peer("handwritten", None, "mnist", 1, tmp_path, tmp_path, True, command=hang)

    assert time.perf_counter() - started < 20
    assert peer.status == "killed" and peer.killed and peer.test_accuracy is None
    assert "hard timeout" in peer.error


def _peer(system: str, accuracy: float | None, seconds: float, status: str = "ok") -> PeerRun:
    result = {"status": status, "test_accuracy": accuracy, "trials": 3, "load_seconds": 4.0, "eval_seconds": 2.0}
    return PeerRun(system=system, status=status, seconds=seconds, result=result, curve=[(50.0, 0.95), (90.0, 0.995)])


def _classifly(accuracy: float, seconds: float) -> ClassiflyRun:
    return ClassiflyRun(
        status="succeeded",
        train_seconds=seconds,
        test_accuracy=accuracy,
        val_target_seconds=seconds - 10,
        trials=[{"title": "Medium CNN", "epochs": 4, "best_val_accuracy": 0.995, "stop_reason": "reached"}],
        winner="Medium CNN",
        step_seconds={"preparing": 8.0, "searching": 70.0, "testing": 2.5},
    )


def _targets(targets) -> dict[str, tuple]:
    return {target.name: (target.value, target.met) for target in targets}


def test_collect_flags_each_target_and_caps_the_automl_time_at_the_budget() -> None:
    classifly = _classifly(0.994, 90.0)
    classifly.memory = type("Memory", (), {"peak_mb": 5000.0, "samples": 10})()
    automl = _peer("automl", 0.990, 420.0)  # overran its 300 s budget: the ratio uses 300 s
    handwritten = _peer("handwritten", 0.97, 310.0)

    results, targets, notes = collect("mnist", 300, classifly, automl, handwritten)

    found = _targets(targets)
    assert found["MNIST: Classifly test accuracy ≥ 99.3%"] == (0.994, True)
    assert found["MNIST: Classifly training within 5 min"] == (90.0, True)
    assert found["MNIST: Classifly time ≤ 1/3 of the AutoML peer's"] == (pytest.approx(0.3), True)
    assert found["MNIST: Classifly at least as accurate as the AutoML peer"][1] is True
    assert found["MNIST: Classifly at least as accurate as the hand-written script"][1] is True
    assert found["MNIST: platform peak memory ≤ 8 GB"] == (5000.0, True)
    values = {(r.system, r.metric): r.value for r in results}
    assert values[("autokeras", "mnist.val_target_seconds")] == 90.0
    assert values[("handwritten-keras", "mnist.test_accuracy")] == 0.97
    assert values[("classifly", "mnist.step.searching")] == 70.0
    assert any("Medium CNN" in note for note in notes)


def test_collect_misses_targets_it_cannot_measure() -> None:
    failed = ClassiflyRun(status="failed", error="no candidate finished", train_seconds=130.0)

    _, targets, notes = collect("flowers", 120, failed, _peer("automl", None, 200, "killed"), _peer("x", 0.8, 100))

    assert all(not target.met for target in targets)
    assert _targets(targets)["flowers: Classifly test accuracy ≥ 92.0%"] == (None, False)
    assert any("did not succeed" in note for note in notes) and any("did not finish" in note for note in notes)


def test_results_are_written_in_the_benchmark_shape_with_a_report(tmp_path: Path) -> None:
    results, targets, notes = collect(
        "cifar10", 1800, _classifly(0.91, 500.0), _peer("automl", 0.85, 1800), _peer("handwritten", 0.88, 1800)
    )

    path = write_results("training", {"datasets": ["cifar10"]}, results, targets, notes, results_dir=tmp_path / "r")

    document = json.loads(path.read_text())
    assert document["benchmark"] == "training" and path.name == "training.json"
    for target in document["targets"]:
        assert set(target) == {"name", "metric", "value", "op", "target", "met"} and isinstance(target["met"], bool)
    report = (tmp_path / "RESULTS.md").read_text()
    assert "## training" in report and "CIFAR-10: Classifly test accuracy ≥ 90.0%" in report


def test_the_command_line_picks_datasets_and_quick_mode() -> None:
    args = parse_args(["--only", "training", "--datasets", "mnist,flowers", "--quick"])

    assert args.names == ["training"] and args.dataset_keys == ("mnist", "flowers") and args.smoke is True
    with pytest.raises(SystemExit):
        parse_args(["--datasets", "imagenet"])
