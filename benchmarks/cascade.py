"""Whole-cascade runs (`recstack run`): seed spread, thread-count check, and the records behind the
cascade tables of docs/BENCHMARKS.md.

    python benchmarks/cascade.py --seeds 42,1,2,3,4 --threads 2      # seed spread of the default run
    python benchmarks/cascade.py --seeds 42,1,2 --threads 1          # same seeds, another thread count
    python benchmarks/cascade.py --seeds 42 --threads 2 --repeat 2   # same seed and threads twice
    python benchmarks/cascade.py --config configs/amazon-beauty.yaml --seeds 42
    python benchmarks/cascade.py --table                             # mean ± std, thread check, expect margins

Each run is `recstack run CONFIG --seed S --threads T --fresh --runs-dir runs/cascade-bench` in a fresh
process, timed, with the 1-minute load average at its start; one JSON line per run goes to
benchmarks/results/cascade.jsonl (metrics in full precision, plus a fingerprint of metrics.json's
metrics, so two runs can be checked for bit-identical results). `--table` reads that file only.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import shlex
import statistics
import subprocess
import sys
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))
from sequential import RESULTS, append_jsonl

ROOT = Path(__file__).resolve().parents[1]
RESULTS_FILE = RESULTS.with_name("cascade.jsonl")
DEFAULT_CONFIG = "configs/ml-100k.yaml"
RUNS_DIR = "runs/cascade-bench"
RECSTACK = Path(sys.executable).with_name("recstack")


def fingerprint(metrics: dict[str, Any]) -> str:
    """sha256 of the metrics (every split, full precision): equal fingerprints = bit-identical metrics."""
    return hashlib.sha256(json.dumps(metrics, sort_keys=True).encode()).hexdigest()[:16]


def git_commit() -> str:
    try:
        head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True)
        dirty = subprocess.run(["git", "status", "--porcelain", "src"], cwd=ROOT, capture_output=True, text=True)
    except OSError:
        return "unknown"
    return head.stdout.strip() + (" + uncommitted src changes" if dirty.stdout.strip() else "")


def run_once(config: str, seed: int, threads: int, log: Path) -> dict[str, Any]:
    """One `recstack run` in its own process; returns the record appended to cascade.jsonl."""
    name = yaml.safe_load((ROOT / config).read_text()).get("name", "ml-100k-cascade")
    command = [str(RECSTACK), "run", config, "--seed", str(seed), "--threads", str(threads), "--fresh"]
    command += ["--runs-dir", RUNS_DIR]
    load = os.getloadavg()[0]
    started = time.perf_counter()
    with log.open("a") as out:
        out.write(f"\n$ {shlex.join(command)}\n")
        out.flush()
        done = subprocess.run(command, cwd=ROOT, stdout=out, stderr=subprocess.STDOUT)
    wall = time.perf_counter() - started
    if done.returncode != 0:
        raise SystemExit(f"{shlex.join(command)} failed (exit {done.returncode}); see {log}")
    result = json.loads((ROOT / RUNS_DIR / name / "metrics.json").read_text())
    metrics = result["metrics"]
    return {
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "machine": f"{platform.machine()}, {os.cpu_count()} cpus, torch {result.get('torch')}",
        "command": "recstack " + shlex.join(command[1:]),
        "benchmark": "python benchmarks/cascade.py " + shlex.join(sys.argv[1:]),
        "commit": git_commit(),
        "config": config,
        "name": name,
        "dataset": result["dataset"],
        "seed": result["seed"],
        "threads": result["threads"],
        "mkl_cbwr": result.get("mkl_cbwr"),
        "load_at_start": round(load, 2),
        "env": {k: os.environ[k] for k in ("OMP_WAIT_POLICY", "OMP_NUM_THREADS", "MKL_CBWR") if k in os.environ},
        "wall_seconds": round(wall, 1),
        "fit_seconds": result["fit_seconds"],
        "train_seconds": result["train_seconds"],
        "page_tuning": {k: v for k, v in (result.get("page_tuning") or {}).items() if k != "seconds"},
        "fingerprint": fingerprint(metrics),
        "metrics": metrics,
        "expect": [{"metric": e["metric"], "got": e["got"], "pass": e["pass"]} for e in result["expect"]],
    }


# ---- the table ------------------------------------------------------------------------------------------
def flat(metrics: dict[str, Any], prefix: str = "") -> dict[str, float]:
    """{"test": {"ranker": {"like/auc": x}}} -> {"test/ranker/like/auc": x} (the keys of `expect:`)."""
    out: dict[str, float] = {}
    for key, value in metrics.items():
        name = f"{prefix}/{key}" if prefix else key
        if isinstance(value, dict):
            out.update(flat(value, name))
        elif isinstance(value, (int, float)):
            out[name] = float(value)
    return out


def metric(record: dict[str, Any], key: str) -> float:
    return flat(record["metrics"])[key]


def table_keys(records: list[dict[str, Any]]) -> list[tuple[str, str]]:
    """(label, metrics key) of the summary: page R@10 / N@10, each channel's recall@200, ranker AUC."""
    test = records[0]["metrics"]["test"]
    keys = [("page R@10", "test/page/recall@10"), ("page N@10", "test/page/ndcg@10")]
    deepest = max((k for k in test["retrieval"] if k.startswith("recall@")), key=lambda k: int(k.split("@")[1]))
    keys += [(f"{channel} {deepest}", f"test/retrieval/{deepest}/{channel}") for channel in test["retrieval"][deepest]]
    if "ranker" in test:
        keys += [(f"ranker {k}", f"test/ranker/{k}") for k in test["ranker"] if k.endswith("/auc")]
    return keys


def mean_std(values: list[float]) -> tuple[float, float]:
    return statistics.fmean(values), statistics.stdev(values) if len(values) > 1 else 0.0


def print_table(config: str, since: str | None) -> None:
    records = [json.loads(line) for line in RESULTS_FILE.read_text().splitlines() if line.strip()]
    records = [r for r in records if r["config"] == config and (since is None or r["date"] >= since)]
    if not records:
        raise SystemExit(f"no records of {config} in {RESULTS_FILE}")
    keys = table_keys(records)
    groups: dict[tuple[int, Any], dict[int, list[dict[str, Any]]]] = {}
    for r in records:
        groups.setdefault((r["threads"], r["mkl_cbwr"]), {}).setdefault(r["seed"], []).append(r)
    for (threads, cbwr), by_seed in sorted(groups.items(), key=lambda g: (str(g[0][1]), g[0][0])):
        runs = [rs[-1] for rs in by_seed.values()]
        dates = sorted(r["date"][:10] for r in runs)
        print(f"\n{config}, {threads} threads, MKL_CBWR={cbwr}: seeds {sorted(by_seed)} ({dates[0]}..{dates[-1]})")
        print("| metric (test) | " + " | ".join(f"seed {r['seed']}" for r in runs) + " | mean ± std |")
        print("|---|" + "---|" * (len(runs) + 1))
        for label, key in keys:
            values = [metric(r, key) for r in runs]
            m, s = mean_std(values)
            print(f"| {label} | " + " | ".join(f"{v:.4f}" for v in values) + f" | {m:.4f} ± {s:.4f} |")
        walls = [r["wall_seconds"] for r in runs]
        loads = [r["load_at_start"] for r in runs if r["load_at_start"] is not None]
        load = f" (load at start {min(loads):.1f}–{max(loads):.1f})" if loads else ""
        print(f"wall {min(walls):.0f}–{max(walls):.0f} s{load}")
        for seed, rs in sorted(by_seed.items()):
            if len(rs) > 1:
                same = len({r["fingerprint"] for r in rs}) == 1
                print(f"repeat seed {seed}: {len(rs)} runs, metrics {'bit-identical' if same else 'DIFFER'}")
    thread_check(records, keys)
    expect_margins(config, groups, keys)


def thread_check(records: list[dict[str, Any]], keys: list[tuple[str, str]]) -> None:
    """Same seed and MKL_CBWR, different thread counts: identical metrics, or by how much they differ."""
    by: dict[tuple[int, Any], dict[int, dict[str, Any]]] = {}
    for r in records:
        by.setdefault((r["seed"], r["mkl_cbwr"]), {})[r["threads"]] = r  # latest per thread count
    for (seed, cbwr), per_threads in sorted(by.items(), key=lambda x: (str(x[0][1]), x[0][0])):
        if len(per_threads) < 2:
            continue
        counts = sorted(per_threads)
        same = len({per_threads[t]["fingerprint"] for t in counts}) == 1
        line = f"threads {counts}, seed {seed}, MKL_CBWR={cbwr}: metrics {'bit-identical' if same else 'differ'}"
        if not same:
            diffs = []
            for label, key in keys:
                values = [metric(per_threads[t], key) for t in counts]
                if max(values) != min(values):
                    diffs.append(f"{label} {' vs '.join(f'{v:.4f}' for v in values)}")
            line += ": " + ("; ".join(diffs) if diffs else "(only outside the summary metrics)")
        print(line)


def expect_margins(config: str, groups: dict[tuple[int, Any], dict[int, list[dict[str, Any]]]], keys: Any) -> None:
    """Each `expect:` bound of the config against the seed spread of the largest group of runs."""
    expect = (yaml.safe_load((ROOT / config).read_text()) or {}).get("expect") or {}
    if not expect:
        return
    runs = [rs[-1] for rs in max(groups.values(), key=len).values()]
    print(f"\nexpect bounds of {config} vs {len(runs)} seeds (mean − 3·std must stay above a min bound):")
    for key, spec in expect.items():
        values = [metric(r, key) for r in runs]
        m, s = mean_std(values)
        bound = spec.get("min")
        verdict = "" if bound is None else ("ok" if bound < m - 3 * s else "INSIDE the spread")
        print(f"  {key}: min {bound}; runs {min(values):.4f}–{max(values):.4f}, mean − 3·std {m - 3 * s:.4f} {verdict}")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", default=DEFAULT_CONFIG, help="experiment YAML, relative to the repository")
    parser.add_argument("--seeds", default="42", help="comma-separated run seeds")
    parser.add_argument("--threads", default="2", help="comma-separated torch thread counts")
    parser.add_argument("--repeat", type=int, default=1, help="runs per (seed, threads)")
    parser.add_argument("--log", type=Path, default=Path("/tmp/recstack-cascade-bench.log"))
    parser.add_argument("--table", action="store_true", help="summarise cascade.jsonl instead of running")
    parser.add_argument("--since", default=None, help="with --table: only records dated on or after this")
    args = parser.parse_args(argv)
    if args.table:
        print_table(args.config, args.since)
        return
    for seed in [int(s) for s in args.seeds.split(",")]:
        for threads in [int(t) for t in args.threads.split(",")]:
            for _ in range(args.repeat):
                record = run_once(args.config, seed, threads, args.log)
                append_jsonl(RESULTS_FILE, record)
                page = record["metrics"]["test"]["page"]
                print(
                    f"{record['date']} seed {seed} threads {threads}: test page R@10 {page['recall@10']:.4f} "
                    f"N@10 {page['ndcg@10']:.4f}, wall {record['wall_seconds']:.0f} s "
                    f"(load {record['load_at_start']:.1f}), fingerprint {record['fingerprint']}",
                    flush=True,
                )


if __name__ == "__main__":
    main()
