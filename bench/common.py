"""The small framework every benchmark uses: paths, results and targets, the JSON/Markdown reports, memory sampling.

Conventions are in ../shared/BENCHMARKS.md: datasets come from ``../shared/data`` (never the repository), the
platform and its baseline run in the same process run, and each benchmark writes ``bench/results/<name>.json``
(overwritten) and regenerates ``bench/RESULTS.md`` from every JSON there.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import importlib
import json
import operator
import os
import platform
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

BENCH_DIR = Path(__file__).resolve().parent
REPO_ROOT = BENCH_DIR.parent
RESULTS_DIR = BENCH_DIR / "results"
# ../shared/data beside the clone (on CI and on the development machines).
DEFAULT_DATA_DIR = Path(__file__).resolve().parents[2] / "shared" / "data"
DATA_ENV = "CLASSIFLY_BENCH_DATA"
CACHE_ENV = "CLASSIFLY_BENCH_CACHE"
MiB = 2**20


def data_dir(explicit: str | os.PathLike[str] | None = None) -> Path:
    """Where datasets are read from: ``--data``, else $CLASSIFLY_BENCH_DATA, else ../shared/data."""
    chosen = explicit or os.environ.get(DATA_ENV) or DEFAULT_DATA_DIR
    return Path(chosen).expanduser().resolve()


def cache_dir(explicit: str | os.PathLike[str] | None = None) -> Path:
    """Where generated inputs (zips) are kept between runs: never inside the repository."""
    if explicit or os.environ.get(CACHE_ENV):
        chosen = Path(explicit or os.environ[CACHE_ENV])
    else:
        chosen = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "classifly-bench"
    chosen = chosen.expanduser().resolve()
    chosen.mkdir(parents=True, exist_ok=True)
    return chosen


@dataclass(frozen=True)
class Context:
    """What `python -m bench` hands every benchmark's ``run``."""

    data_dir: Path
    results_dir: Path
    cache_dir: Path
    smoke: bool = False
    limit_per_class: int | None = None  # per class and split; None = the whole dataset
    datasets: tuple[str, ...] | None = None  # dataset keys to run (bench.datasets.ALL_DATASETS); None = all

    def wants(self, dataset: str) -> bool:
        """Whether `--datasets` chose this dataset (every dataset when it was not given)."""
        return self.datasets is None or dataset in self.datasets


@dataclass(frozen=True)
class Result:
    system: str
    metric: str
    value: float | int | None
    unit: str | None = None

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"system": self.system, "metric": self.metric, "value": _plain(self.value)}
        if self.unit:
            out["unit"] = self.unit
        return out


_OPS: dict[str, Callable[[float, float], bool]] = {
    "<=": operator.le,
    "<": operator.lt,
    ">=": operator.ge,
    ">": operator.gt,
    "==": operator.eq,
}


@dataclass(frozen=True)
class Target:
    """A goal from the issue tracker; `met` is False when the value could not be measured."""

    name: str
    metric: str
    value: float | int | None
    op: str
    target: float | int

    def __post_init__(self) -> None:
        if self.op not in _OPS:
            raise ValueError(f"unknown comparison {self.op!r}; use one of {', '.join(_OPS)}")

    @property
    def met(self) -> bool:
        return self.value is not None and bool(_OPS[self.op](self.value, self.target))

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "metric": self.metric,
            "value": _plain(self.value),
            "op": self.op,
            "target": _plain(self.target),
            "met": self.met,
        }


def _plain(value: Any) -> Any:
    """Numbers as JSON wants them: floats rounded to 4 decimals, numpy scalars unwrapped."""
    if value is None or isinstance(value, bool):
        return value
    if hasattr(value, "item"):
        value = value.item()
    if isinstance(value, float):
        return round(value, 4)
    return value


def machine_info() -> dict[str, Any]:
    return {"cpus": os.cpu_count(), "gpu": None, "python": platform.python_version()}


def load_average() -> str:
    try:
        return ", ".join(f"{value:.2f}" for value in os.getloadavg())
    except OSError:
        return "unknown"


def git_revision() -> str:
    """The commit measured, with "-dirty" when the working tree has uncommitted changes."""
    try:
        done = subprocess.run(
            ["git", "describe", "--always", "--dirty"], cwd=REPO_ROOT, capture_output=True, text=True, timeout=10
        )
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return done.stdout.strip() or "unknown"


def utc_now() -> str:
    return dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def write_results(
    name: str,
    settings: dict[str, Any],
    results: Iterable[Result],
    targets: Iterable[Target],
    notes: Iterable[str] = (),
    *,
    results_dir: Path = RESULTS_DIR,
    report_path: Path | None = None,
) -> Path:
    """Write ``<results_dir>/<name>.json`` in the BENCHMARKS.md shape, then regenerate the Markdown report.

    The report goes to `report_path`, by default ``<results_dir>/../RESULTS.md`` (``bench/RESULTS.md``).
    """
    results_dir.mkdir(parents=True, exist_ok=True)
    document: dict[str, Any] = {
        "benchmark": name,
        "when": utc_now(),
        "machine": machine_info(),
        "settings": settings,
        "results": [result.to_dict() for result in results],
        "targets": [target.to_dict() for target in targets],
    }
    notes = list(notes)
    if notes:
        document["notes"] = notes
    path = results_dir / f"{name}.json"
    temp = path.with_name(f".{path.name}.tmp")
    temp.write_text(json.dumps(document, indent=2, ensure_ascii=False) + "\n")
    os.replace(temp, path)
    render_report(results_dir, report_path or results_dir.parent / "RESULTS.md")
    return path


def render_report(results_dir: Path, report_path: Path) -> Path:
    """Regenerate the Markdown report from every ``<results_dir>/*.json`` (one section per benchmark)."""
    lines = [
        "# Benchmark results",
        "",
        "Generated by `make bench` (`python -m bench`) from `"
        + _relative(results_dir, report_path.parent)
        + "/*.json`; do not edit by hand. How to run and what each benchmark measures: [bench/README.md]("
        + _relative(BENCH_DIR / "README.md", report_path.parent)
        + ").",
        "",
    ]
    for path in sorted(results_dir.glob("*.json")):
        try:
            document = json.loads(path.read_text())
        except (OSError, json.JSONDecodeError) as error:
            lines += [f"## {path.stem}", "", f"Could not read `{path.name}`: {error}", ""]
            continue
        lines += _section(document, path, results_dir, report_path.parent)
    report_path.parent.mkdir(parents=True, exist_ok=True)
    report_path.write_text("\n".join(lines).rstrip() + "\n")
    return report_path


def _section(document: dict[str, Any], path: Path, results_dir: Path, report_dir: Path) -> list[str]:
    name = document.get("benchmark", path.stem)
    machine = document.get("machine", {})
    settings = document.get("settings", {})
    lines = [
        f"## {name}",
        "",
        f"Run {document.get('when', '?')} on {machine.get('cpus', '?')} CPUs, GPU: {machine.get('gpu') or 'none'}, "
        f"Python {machine.get('python', '?')}. Data: [`{path.name}`]({_relative(path, report_dir)}).",
        "",
    ]
    if settings:
        lines.append("Settings: " + ", ".join(f"`{key}={_cell(value)}`" for key, value in settings.items()) + ".")
        lines.append("")
    results = document.get("results", [])
    if results:
        lines += ["| system | metric | value | unit |", "|---|---|---:|---|"]
        lines += [
            f"| {r.get('system', '')} | {r.get('metric', '')} | {_cell(r.get('value'))} | {r.get('unit', '')} |"
            for r in results
        ]
        lines.append("")
    targets = document.get("targets", [])
    if targets:
        lines += ["| target | metric | value | goal | met |", "|---|---|---:|---|:---:|"]
        lines += [
            f"| {t.get('name', '')} | {t.get('metric', '')} | {_cell(t.get('value'))} | "
            f"{t.get('op', '')} {_goal(t.get('target'))} | {'✅' if t.get('met') else '❌'} |"
            for t in targets
        ]
        lines.append("")
    notes = document.get("notes", [])
    if notes:
        lines += ["Notes:", ""] + [f"- {note}" for note in notes] + [""]
    for plot in sorted(results_dir.glob(f"{name}-*.png")):
        lines += [f"![{plot.stem}]({_relative(plot, report_dir)})", ""]
    return lines


def _cell(value: Any) -> str:
    if value is None:
        return "—"
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, float):
        return f"{value:,.2f}" if abs(value) >= 0.01 or value == 0 else f"{value:.2g}"
    if isinstance(value, int):
        return f"{value:,}"
    if isinstance(value, list | tuple):
        return ",".join(_cell(item) for item in value)
    if isinstance(value, dict):
        return ", ".join(f"{key}: {_cell(item)}" for key, item in value.items())
    return str(value).replace("|", "\\|")


def _goal(value: Any) -> str:
    """A target as written in the issue: 10, not 10.00."""
    if isinstance(value, float) and value.is_integer():
        return f"{value:,.0f}"
    return _cell(value)


def _relative(path: Path, start: Path) -> str:
    return Path(os.path.relpath(path, start)).as_posix()


def format_table(results: Iterable[Result], targets: Iterable[Target]) -> str:
    """The short table printed at the end of a benchmark."""
    rows = [(r.system, r.metric, _cell(_plain(r.value)), r.unit or "") for r in results]
    width = [max([len(header)] + [len(row[i]) for row in rows]) for i, header in enumerate(("system", "metric"))]
    out = [f"{'system':<{width[0]}}  {'metric':<{width[1]}}  value"]
    out += [f"{s:<{width[0]}}  {m:<{width[1]}}  {v} {u}".rstrip() for s, m, v, u in rows]
    target_list = list(targets)
    if target_list:
        out.append("")
        out += [
            f"[{'met' if t.met else 'MISSED'}] {t.name}: {_cell(_plain(t.value))} {t.op} {_goal(_plain(t.target))}"
            for t in target_list
        ]
    return "\n".join(out)


def log(message: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def file_create_us(folder: Path, count: int = 2000) -> float:
    """Microseconds to create one small file, spread over 256 sub-folders like the blob store does.

    One file per picture is what an import writes; on some virtual disks a create costs ~1 ms while tmpfs
    takes ~20 us, so this figure says how much of an import's time the disk alone may explain.
    """
    import hashlib
    import shutil

    root = Path(tempfile.mkdtemp(prefix="disk-probe-", dir=folder))
    try:
        for index in range(256):
            (root / f"{index:02x}").mkdir()
        data = b"x" * 300
        started = time.perf_counter()
        for index in range(count):
            digest = hashlib.sha256(str(index).encode()).hexdigest()
            handle = os.open(root / digest[:2] / digest, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
            try:
                os.write(handle, data)
            finally:
                os.close(handle)
        return (time.perf_counter() - started) / count * 1e6
    finally:
        shutil.rmtree(root, ignore_errors=True)


@contextlib.contextmanager
def repeating(step: Callable[[], object], interval_s: float, name: str = "bench-sampler") -> Iterator[None]:
    """Call `step()` now and then every `interval_s` from a background thread while the block runs."""
    stop = threading.Event()

    def loop() -> None:
        while True:
            step()
            if stop.wait(interval_s):
                return

    thread = threading.Thread(target=loop, name=name, daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join(30)


def pyplot() -> Any | None:
    """matplotlib.pyplot on the Agg backend (files only), or None when matplotlib is not installed."""
    try:
        import matplotlib
    except ImportError:
        return None
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def save_figure(figure: Any, path: Path, *, layout_rect: tuple[float, float, float, float] | None = None) -> Path:
    """Write a plot as PNG at the figure's own dpi (the folder made if needed, the file replaced whole so a
    reader never sees half of it) and free it. `layout_rect` leaves room for a figure-wide legend."""
    import matplotlib.pyplot as plt

    figure.tight_layout(rect=layout_rect)
    path.parent.mkdir(parents=True, exist_ok=True)
    temp = path.with_name(path.name + ".tmp")
    figure.savefig(temp, format="png")
    plt.close(figure)
    os.replace(temp, path)
    return path


def run_smoke(name: str, work: Path, timeout_s: float, *extra: str) -> subprocess.CompletedProcess[str]:
    """`python -m bench --only <name> --smoke` in a child process, results in ``<work>/results`` (RESULTS.md in
    `work`) and generated inputs in ``<work>/cache``: what the smoke tests run."""
    command = [sys.executable, "-m", "bench", "--only", name, "--smoke", *extra]
    command += ["--results", str(work / "results"), "--cache", str(work / "cache")]
    env = {**os.environ, "RAY_AUTH_MODE": "token"}
    return subprocess.run(command, cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=timeout_s)


# --- memory ---------------------------------------------------------------------------------------------------


def _psutil():
    """psutil, which Ray vendors (``ray/thirdparty_files``) and puts on sys.path when it is imported."""
    try:
        return importlib.import_module("psutil")
    except ImportError:
        importlib.import_module("ray")  # importing Ray puts its vendored psutil on sys.path
        return importlib.import_module("psutil")


def local_ray_processes() -> list[Any]:
    """The processes of a local Ray cluster started by this process: every descendant of it.

    ``ray.init(address="local")`` starts the GCS, the raylet and the monitors as our children, and the raylet
    starts every worker and actor (``ray::...``), so the descendants are exactly this cluster, and not
    another Ray that someone else runs on the same machine.
    """
    return _psutil().Process().children(recursive=True)


def own_process() -> list[Any]:
    return [_psutil().Process()]


@dataclass
class MemorySampler:
    """Sum of the RSS of a set of processes, sampled every `interval_s` by a background thread.

    ``with MemorySampler() as memory: operation()`` samples a baseline before the operation and the peak
    during it; the process set is re-read every `refresh_every` samples, so workers started by the
    operation are counted. RSS counts shared pages (Ray's object store, shared libraries) once per process,
    so the sum is an upper bound of the real use; the increase over the baseline is the figure to compare.
    """

    processes: Callable[[], list[Any]] = local_ray_processes
    interval_s: float = 0.1
    refresh_every: int = 5
    baseline_mb: float = 0.0
    peak_mb: float = 0.0
    samples: int = 0
    baseline_processes: int = 0
    peak_processes: int = 0
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None
    _tracked: list[Any] = field(default_factory=list)

    @property
    def increase_mb(self) -> float:
        return max(0.0, self.peak_mb - self.baseline_mb)

    def sample(self, refresh: bool = True) -> float:
        """One measurement in MB (also updates the peak)."""
        psutil = _psutil()
        if refresh or not self._tracked:
            self._tracked = self.processes()
        total = 0
        alive = []
        for process in self._tracked:
            try:
                total += process.memory_info().rss
                alive.append(process)
            except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
                continue
        self._tracked = alive
        value = total / MiB
        self.samples += 1
        if value > self.peak_mb:
            self.peak_mb = value
            self.peak_processes = len(alive)
        return value

    def __enter__(self) -> MemorySampler:
        self.samples, self.peak_mb = 0, 0.0
        self.baseline_mb = self.sample()
        self.baseline_processes = len(self._tracked)
        self._stop.clear()
        self._thread = threading.Thread(target=self._loop, name="memory-sampler", daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        self.sample()

    def _loop(self) -> None:
        tick = 0
        while not self._stop.wait(self.interval_s):
            tick += 1
            self.sample(refresh=tick % self.refresh_every == 0)
