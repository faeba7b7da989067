"""The soak benchmark in quick mode (`python -m bench --only soak --quick`): 40 s of mixed traffic on a trained
platform, so the benchmark code cannot rot; the full 10 minutes are for `make bench ONLY=soak`."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.ray

REPO_ROOT = Path(__file__).resolve().parents[2]


def test_soak_benchmark_quick(tmp_path: Path) -> None:
    command = [sys.executable, "-m", "bench", "--only", "soak", "--quick"]
    command += ["--results", str(tmp_path / "results"), "--cache", str(tmp_path / "cache")]
    done = subprocess.run(
        command,
        cwd=REPO_ROOT,
        env={**os.environ, "RAY_AUTH_MODE": "token"},
        capture_output=True,
        text=True,
        timeout=420,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-5000:]

    document = json.loads((tmp_path / "results" / "soak.json").read_text())
    assert document["benchmark"] == "soak" and document["settings"]["smoke"] is True
    values = {(r["system"], r["metric"]): r["value"] for r in document["results"]}
    for kind in ("classify", "feedback", "upload"):
        assert values[("classifly", f"{kind}.requests")] > 0, document
    assert values[("classifly", "errors")] == 0, document.get("notes")
    assert values[("classifly", "memory_after_warmup_mb")] > 0
    assert isinstance(values[("classifly", "memory_growth_pct")], float | int)
    assert {t["metric"] for t in document["targets"]} == {"errors", "memory_growth_pct"}
    report = (tmp_path / "RESULTS.md").read_text()
    assert "## soak" in report
