"""``python -m bench [--only import,training] [--datasets mnist,...] [--data DIR] [--smoke]``: run benchmarks,
write bench/results and RESULTS.md.

Exits non-zero only when a benchmark crashes; a missed target is a result, reported in the table and the JSON.
"""

from __future__ import annotations

import argparse
import sys
import time
import traceback
from pathlib import Path

from bench import cluster_bench, expansion_bench, import_bench, serving_bench, soak_bench, training_bench
from bench.common import RESULTS_DIR, Context, cache_dir, data_dir, log
from bench.datasets import ALL_DATASETS

# name -> run(Context) -> Path of the JSON written, or None when skipped (no data)
BENCHMARKS = {
    "import": import_bench.run,
    "training": training_bench.run,
    "expansion": expansion_bench.run,
    "soak": soak_bench.run,
    "serving": serving_bench.run,
    "cluster": cluster_bench.run,
}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__.splitlines()[0])
    parser.add_argument("--only", metavar="NAME[,NAME]", help=f"run only these ({', '.join(BENCHMARKS)})")
    parser.add_argument(
        "--data", metavar="DIR", help="datasets folder (default: $CLASSIFLY_BENCH_DATA or ../shared/data)"
    )
    parser.add_argument(
        "--datasets",
        metavar="NAME[,NAME]",
        help=f"only these datasets ({', '.join(ALL_DATASETS)}); each benchmark runs those of them it knows",
    )
    parser.add_argument(
        "--smoke",
        "--quick",
        dest="smoke",
        action="store_true",
        help="tiny sizes and short budgets, to check the benchmark code itself (results mean nothing)",
    )
    parser.add_argument(
        "--limit-per-class", type=int, metavar="N", help="use the first N pictures per class and split (any mode)"
    )
    parser.add_argument(
        "--results",
        metavar="DIR",
        help="where <name>.json and plots go, RESULTS.md beside it "
        "(default: bench/results; with --smoke: <cache>/smoke-results, so real results are not overwritten)",
    )
    parser.add_argument("--cache", metavar="DIR", help="generated inputs (default: $CLASSIFLY_BENCH_CACHE or ~/.cache)")
    parser.add_argument("--list", action="store_true", help="list the benchmarks and exit")
    args = parser.parse_args(argv)
    names = [name.strip() for name in (args.only or "").split(",") if name.strip()] or list(BENCHMARKS)
    unknown = [name for name in names if name not in BENCHMARKS]
    if unknown:
        parser.error(f"unknown benchmark {', '.join(unknown)}; choose from {', '.join(BENCHMARKS)}")
    if args.limit_per_class is not None and args.limit_per_class < 1:
        parser.error("--limit-per-class must be at least 1")
    datasets = [name.strip() for name in (args.datasets or "").split(",") if name.strip()]
    unknown = [name for name in datasets if name not in ALL_DATASETS]
    if unknown:
        parser.error(f"unknown dataset {', '.join(unknown)}; choose from {', '.join(ALL_DATASETS)}")
    args.names = names
    args.dataset_keys = tuple(datasets) or None
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.list:
        print("\n".join(BENCHMARKS))
        return 0
    cache = cache_dir(args.cache)
    if args.results:
        results = Path(args.results).expanduser().resolve()
    else:
        results = cache / "smoke-results" if args.smoke else RESULTS_DIR
    ctx = Context(
        data_dir=data_dir(args.data),
        results_dir=results,
        cache_dir=cache,
        smoke=args.smoke,
        limit_per_class=args.limit_per_class,
        datasets=args.dataset_keys,
    )
    log(f"data {ctx.data_dir}, results {ctx.results_dir}, cache {ctx.cache_dir}")
    crashed = []
    for name in args.names:
        started = time.perf_counter()
        log(f"=== {name} ===")
        try:
            written = BENCHMARKS[name](ctx)
        except Exception:  # noqa: BLE001 - one crashing benchmark must not hide the others' results
            traceback.print_exc()
            crashed.append(name)
            continue
        log(
            f"=== {name}: {'skipped (no data)' if written is None else 'done'} in {time.perf_counter() - started:.0f} s"
        )
    if crashed:
        log(f"crashed: {', '.join(crashed)}")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
