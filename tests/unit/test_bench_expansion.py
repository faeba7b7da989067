"""The expansion benchmark's pieces without a platform: cutting the dataset zip in two, the probe picture,
the timing split from job timestamps, result collection, targets and the report."""

from __future__ import annotations

import json
import zipfile
from pathlib import Path

import pytest

from bench.__main__ import BENCHMARKS, parse_args
from bench.common import write_results
from bench.datasets import BuiltZip
from bench.expansion_bench import (
    ExpansionRun,
    class_of,
    collect,
    holdout_class,
    parse_time,
    probe_picture,
    reference_results,
    split_zip,
    update_timings,
)


def _dataset_zip(folder: Path, classes: tuple[str, ...] = ("airplane", "cat", "truck")) -> BuiltZip:
    path = folder / "tiny-full-deflated.zip"
    folder.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        for split, count in (("train", 3), ("test", 2)):
            archive.writestr(f"{split}/", b"")
            for label in classes:
                archive.writestr(f"{split}/{label}/", b"")
                for i in range(count):
                    archive.writestr(f"{split}/{label}/{i}.jpg", f"{split}-{label}-{i}".encode())
    return BuiltZip("tiny", path, 15, len(classes), {"train": 9, "test": 6}, "deflated", path.stat().st_size, None)


def _names(path: Path) -> set[str]:
    with zipfile.ZipFile(path) as archive:
        return set(archive.namelist())


def test_the_held_out_class_is_the_last_in_label_order() -> None:
    assert holdout_class([str(d) for d in range(10)]) == "9"
    assert holdout_class({"airplane", "truck", "ship", "cat"}) == "truck"
    assert class_of("train/cat/1.jpg") == "cat"
    assert class_of("train/cat/") is None and class_of("train/") is None and class_of("cat/1.jpg") is None


def test_split_zip_keeps_nine_classes_in_one_zip_and_the_tenth_in_the_other(tmp_path: Path) -> None:
    built = _dataset_zip(tmp_path / "cache")

    parts = split_zip(built, tmp_path / "cache")

    assert parts.holdout == "truck"
    assert parts.base_counts == {"train": 6, "test": 4} and parts.added_counts == {"train": 3, "test": 2}
    base, added = _names(parts.base), _names(parts.added)
    assert not any("/truck/" in name for name in base) and "train/cat/2.jpg" in base and "test/" in base
    assert added == {"train/", "test/", "train/truck/", "test/truck/"} | {
        f"{split}/truck/{i}.jpg" for split, count in (("train", 3), ("test", 2)) for i in range(count)
    }
    with zipfile.ZipFile(parts.added) as archive:
        assert archive.read("test/truck/1.jpg") == b"test-truck-1"

    again = split_zip(built, tmp_path / "cache")  # reused, not rebuilt

    assert again == parts


def test_split_zip_refuses_a_class_the_zip_does_not_have(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="no class 'dog'"):
        split_zip(_dataset_zip(tmp_path), tmp_path, holdout="dog")


def test_the_probe_is_a_test_picture_of_the_new_class(tmp_path: Path) -> None:
    parts = split_zip(_dataset_zip(tmp_path), tmp_path)

    assert probe_picture(parts.added, "truck") == ("0.jpg", b"test-truck-0")


def test_the_time_to_live_splits_into_import_wait_and_update() -> None:
    request = parse_time("2026-01-01T00:00:00Z")
    imported = {"finished_at": "2026-01-01T00:00:01.500000Z"}
    update = {"started_at": "2026-01-01T00:00:03.500000+00:00", "finished_at": "2026-01-01T00:00:07"}

    timings = update_timings(request, imported, update)

    assert timings == pytest.approx(
        {"import_seconds": 1.5, "update_wait_seconds": 2.0, "update_seconds": 3.5, "request_to_job_live_seconds": 7.0}
    )
    assert update_timings(request, imported, {"started_at": None, "finished_at": None})["update_seconds"] is None


def _finished(**changes) -> ExpansionRun:
    run = ExpansionRun(
        holdout="9",
        status="ok",
        base_train_seconds=290.0,
        base_accuracy=0.99,
        base_winner="CNN",
        update_status="succeeded",
        update_added=["9"],
        added_pictures=6958,
        import_seconds=2.0,
        update_wait_seconds=2.1,
        update_seconds=4.0,
        request_to_job_live_seconds=8.1,
        request_to_answer_seconds=8.4,
        update_accuracy=0.985,
        retrain_status="succeeded",
        retrain_seconds=300.0,
        retrain_accuracy=0.99,
        retrain_winner="CNN",
    )
    for name, value in changes.items():
        setattr(run, name, value)
    return run


def test_collect_meets_both_targets_when_fast_and_close_to_the_retrain() -> None:
    results, targets, notes = collect("mnist", 300, _finished())

    values = {(r.system, r.metric): r.value for r in results}
    assert values[("update-retrain", "mnist.accuracy_difference")] == pytest.approx(-0.005)
    assert values[("retrain/update", "mnist.time_ratio")] == pytest.approx(300 / 8.4)
    assert values[("dissertation/update", "mnist.time_ratio")] == pytest.approx(50 / 8.4)
    assert [t.met for t in targets] == [True, True]
    assert [t.target for t in targets] == [10.0, -0.01]
    assert any("quality guard is satisfied" in note for note in notes)


def test_collect_misses_the_targets_when_slow_or_worse_and_says_why_a_run_failed() -> None:
    _, targets, _ = collect("cifar10", 1800, _finished(request_to_answer_seconds=42.0, update_accuracy=0.97))
    assert [t.met for t in targets] == [False, False]

    failed = ExpansionRun(holdout="truck", status="error", error="RuntimeError: the model update ended failed")
    results, targets, notes = collect("cifar10", 1800, failed)

    assert [t.met for t in targets] == [False, False] and all(t.value is None for t in targets)
    assert any("did not finish" in note and "update ended failed" in note for note in notes)
    assert all(r.value is None for r in results if r.metric != "cifar10.peak_memory_mb")


def test_the_results_document_has_the_benchmark_shape_and_the_report_a_section(tmp_path: Path) -> None:
    results, targets, notes = collect("mnist", 300, _finished())

    path = write_results(
        "expansion", {"smoke": True}, results + reference_results(), targets, notes, results_dir=tmp_path / "results"
    )

    document = json.loads(path.read_text())
    assert document["benchmark"] == "expansion"
    assert {
        "system": "dissertation",
        "metric": "mnist.request_to_live_seconds",
        "value": 50.0,
        "unit": "s",
    } in document["results"]
    assert all(set(t) == {"name", "metric", "value", "op", "target", "met"} for t in document["targets"])
    report = (tmp_path / "RESULTS.md").read_text()
    assert "## expansion" in report and "MNIST: new class answering ≤ 10 s after the request" in report


def test_the_command_line_knows_the_benchmark() -> None:
    assert "expansion" in BENCHMARKS
    args = parse_args(["--only", "expansion", "--quick", "--datasets", "mnist"])
    assert args.names == ["expansion"] and args.smoke and args.dataset_keys == ("mnist",)
