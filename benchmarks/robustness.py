"""Robustness of the learning tests: rerun every test marked `learns` over seeds x torch threads.

A test that trains something and asserts a quality threshold must pass on any machine of this kind, at any
thread count and seed, with a wide margin. This script runs `pytest -m learns` once per (seed, threads)
combination, with RECSTACK_TEST_SEED shifting every seed the tests use (data, initialisation, batch
order) and RECSTACK_TEST_THREADS setting torch's intra-op threads; the tests' `check_at_least` /
`check_at_most` calls log each margin (value - floor, or ceiling - value) to a JSONL file. It prints,
per check, the minimum margin over all combinations and which combination gave it, and appends one record
to benchmarks/results/robustness.jsonl.

    python benchmarks/robustness.py                       # seeds 0-4 x threads 1, 2
    python benchmarks/robustness.py --seeds 0 1 --threads 1 -k tiger
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))
from sequential import append_jsonl  # noqa: E402

RESULTS = ROOT / "benchmarks" / "results" / "robustness.jsonl"


def run_combination(seed: int, threads: int, margin_log: Path, select: str | None) -> dict[str, Any]:
    """One `pytest -m learns` run; returns its exit code, closing line and wall time."""
    env = dict(
        os.environ,
        RECSTACK_TEST_SEED=str(seed),
        RECSTACK_TEST_THREADS=str(threads),
        RECSTACK_MARGIN_LOG=str(margin_log),
    )
    command = [sys.executable, "-m", "pytest", "-q", "-m", "learns", "-p", "no:cacheprovider"]
    if select:
        command += ["-k", select]
    started = time.perf_counter()
    done = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, check=False)
    lines = [line for line in done.stdout.splitlines() if line.strip()]
    failed = [line for line in lines if line.startswith("FAILED")]
    return {
        "seed": seed,
        "threads": threads,
        "returncode": done.returncode,
        "summary": lines[-1] if lines else "",
        "failed": failed,
        "seconds": round(time.perf_counter() - started, 1),
    }


def smallest_margins(margin_log: Path) -> list[dict[str, Any]]:
    """Per (test, check): the minimum margin over all combinations, with the seed and threads that gave it."""
    worst: dict[tuple[str, str], dict[str, Any]] = {}
    runs: dict[tuple[str, str], int] = {}
    for line in margin_log.read_text().splitlines():
        row = json.loads(line)
        key = (row["test"], row["check"])
        runs[key] = runs.get(key, 0) + 1
        if key not in worst or row["margin"] < worst[key]["margin"]:
            worst[key] = row
    return [{**worst[key], "runs": runs[key]} for key in sorted(worst)]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    parser.add_argument("-k", dest="select", default=None, help="pytest -k expression to run a subset")
    parser.add_argument("--no-record", action="store_true", help="do not append to benchmarks/results/")
    args = parser.parse_args(argv)

    started = time.perf_counter()
    with tempfile.TemporaryDirectory() as folder:
        margin_log = Path(folder) / "margins.jsonl"
        margin_log.touch()
        combos = []
        for seed in args.seeds:
            for threads in args.threads:
                combo = run_combination(seed, threads, margin_log, args.select)
                combos.append(combo)
                print(f"seed {seed} threads {threads}: {combo['summary']} ({combo['seconds']} s)", flush=True)
                for line in combo["failed"]:
                    print("   ", line, flush=True)
        margins = smallest_margins(margin_log)

    print(f"\n{'min margin':>10}  {'value':>8}  {'bound':>7}  {'runs':>4}  worst at   check")
    for row in sorted(margins, key=lambda r: r["margin"]):
        test = row["test"].replace("tests/", "")
        print(
            f"{row['margin']:>10.4f}  {row['value']:>8.4f}  {row['bound']:>7.3f}  {row['runs']:>4}  "
            f"s{row['seed']} t{row['threads']}     {test} :: {row['check']}"
        )
    failures = sum(combo["returncode"] != 0 for combo in combos)
    print(
        f"\n{len(combos)} combinations, {failures} with failures; {len(margins)} checks; "
        f"{time.perf_counter() - started:.0f} s"
    )
    if not args.no_record:
        append_jsonl(
            RESULTS,
            {
                "command": "python benchmarks/robustness.py " + " ".join(argv if argv is not None else sys.argv[1:]),
                "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
                "machine": {"cpu": platform.processor() or platform.machine(), "cores": os.cpu_count()},
                "seeds": args.seeds,
                "threads": args.threads,
                "combinations": combos,
                "margins": margins,
            },
        )
    return 1 if failures else 0


if __name__ == "__main__":
    raise SystemExit(main())
