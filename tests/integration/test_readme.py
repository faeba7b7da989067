"""The README's API walk-through, run exactly as written against a real platform."""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path

import pytest

pytestmark = pytest.mark.ray

ROOT = Path(__file__).resolve().parents[2]
FLOWERS = ROOT.parent / "shared" / "data" / "tf_flowers" / "tf_flowers_120per_class.zip"


def walkthrough() -> str:
    text = (ROOT / "README.md").read_text()
    section = text[text.index("## A walk through the API") :]
    return re.search(r"```bash\n(.*?)```", section, re.S).group(1)


@pytest.mark.skipif(not FLOWERS.exists(), reason="needs ../shared/data/tf_flowers beside the repository")
def test_readme_walkthrough_runs_as_written(platform, tmp_path: Path) -> None:
    script = walkthrough().replace("API=http://127.0.0.1:8000", f"API={platform.url}", 1)
    assert f"API={platform.url}" in script

    result = subprocess.run(
        ["bash", "-euo", "pipefail", "-c", script],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,  # the import, then a training run of at most 2 minutes
        env={**os.environ},
    )

    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "Added 600 pictures in 5 classes." in result.stdout
    assert '"status":4' not in result.stdout and '"status":5' not in result.stdout, result.stdout[-3000:]
    assert '"applied":true' in result.stdout
    assert "Version 1 is ready" in result.stdout, result.stdout[-3000:]
