"""`recstack run [CONFIG]` (the main job) and `recstack bench CONFIG`.

Trains every stage of the cascade, evaluates each one, and writes runs/<name>/: the resolved
config, metrics.json, checkpoints and a report (Markdown + self-contained HTML with plots).
"""

from __future__ import annotations

import contextlib
import json
import os
import platform
import time
from collections.abc import Iterator
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import torch
import typer
import yaml

from recstack.cascade import Cascade, RunConfig
from recstack.cli.common import console, print_metrics
from recstack.config import from_dict, load_yaml, to_dict
from recstack.data.dataset import Dataset
from recstack.errors import ConfigError, DataError


def ensure_dataset(name: str, path: str | Path | None = None, prepare: dict | None = None) -> Dataset:
    """Load a prepared dataset, preparing it (fetching when needed) on first use."""
    try:
        return Dataset.load(name)
    except DataError:
        from recstack.cli.data import prepare_dataset

        with console.status(f"preparing {name} (first use)"):
            return prepare_dataset(name, Path(path) if path else None, prepare)


def load_run_config(path: Path | None, seed: int | None = None) -> RunConfig:
    config = from_dict(RunConfig, load_yaml(path) if path else {}, "")
    if seed is not None:
        config.seed = seed
    return config


def set_threads(threads: int | None) -> None:
    """torch's intra-op threads for the rest of the process (None: torch's default, one per core)."""
    if threads is None:
        return
    if threads < 1:
        raise ConfigError(f"--threads must be >= 1, got {threads}")
    torch.set_num_threads(threads)


@contextlib.contextmanager
def run_numerics(threads: int | None) -> Iterator[None]:
    """The run's torch threads (None: torch's default, one per core), and MKL in strict reproducible mode.

    MKL_CBWR=AVX2,STRICT (unless MKL_CBWR is set; MKL_CBWR=AUTO opts out) makes MKL's GEMMs sum in an
    order that does not depend on the thread count. MKL reads it at its first call, which in the
    `recstack` process comes after this; both settings are restored afterwards (for in-process callers)."""
    before_threads, before_cbwr = torch.get_num_threads(), os.environ.get("MKL_CBWR")
    set_threads(threads)
    if before_cbwr is None:
        os.environ["MKL_CBWR"] = "AVX2,STRICT"
    try:
        yield
    finally:
        torch.set_num_threads(before_threads)
        if before_cbwr is None:
            os.environ.pop("MKL_CBWR", None)


def flatten(metrics: dict[str, Any], prefix: str = "") -> dict[str, float]:
    """{"test": {"page": {"ndcg@10": x}}} -> {"test/page/ndcg@10": x}"""
    flat: dict[str, float] = {}
    for key, value in metrics.items():
        name = f"{prefix}/{key}" if prefix else str(key)
        if isinstance(value, dict):
            flat.update(flatten(value, name))
        elif isinstance(value, (int, float)):
            flat[name] = float(value)
    return flat


def check_expectations(config: RunConfig, flat: dict[str, float]) -> list[dict[str, Any]]:
    results = []
    for key, spec in config.expect.items():
        if key not in flat:
            raise ConfigError(f"expect.{key}: no such metric; metrics look like {', '.join(list(flat)[:6])}, ...")
        results.append({"metric": key, "got": flat[key], "pass": spec.check(flat[key]), **to_dict(spec)})
    return results


def execute(config: RunConfig, runs_dir: Path, fresh: bool = False) -> dict[str, Any]:
    """Fit, evaluate and report one run; returns metrics.json's content."""
    cascade = Cascade(config)  # unknown component names / keys fail here, before any work
    dataset = ensure_dataset(config.dataset.name, config.dataset.path, config.dataset.prepare)
    run_dir = runs_dir / config.name
    if fresh and run_dir.exists():
        import shutil

        shutil.rmtree(run_dir)
    _check_resume_seed(run_dir, config.seed)
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "config.yaml").write_text(yaml.safe_dump(to_dict(config), sort_keys=False))
    started = time.perf_counter()
    cascade.fit(dataset, run_dir, progress=lambda msg: console.print(f"[cyan]•[/] {msg}"))
    cascade.save(run_dir)
    fit_seconds = time.perf_counter() - started

    from recstack.eval.evaluator import evaluate_retriever
    from recstack.retrieval.popular import Popular

    baseline = Popular().fit(cascade.retrieval_view(dataset))
    metrics: dict[str, Any] = {}
    for split in config.eval.splits:
        console.print(f"[cyan]•[/] evaluating on {split}")
        metrics[split] = cascade.evaluate(dataset, split)
        metrics[split]["baseline_popular"] = evaluate_retriever(
            baseline, cascade.retrieval_view(dataset), split, ks=config.eval.page_ks
        )
    flat = flatten(metrics)
    expectations = check_expectations(config, flat)
    result = {
        "name": config.name,
        "dataset": dataset.name,
        "finished": datetime.now(timezone.utc).isoformat(),
        "machine": f"{platform.machine()} {platform.processor() or ''} ({os.cpu_count()} cpus)",
        "torch": torch.__version__,
        "seed": config.seed,
        "threads": torch.get_num_threads(),
        "mkl_cbwr": os.environ.get("MKL_CBWR"),
        "fit_seconds": round(fit_seconds, 1),
        "train_seconds": {k: round(v, 1) for k, v in cascade.train_seconds.items()},
        "page_tuning": cascade.page_tuning,
        "metrics": metrics,
        "expect": expectations,
    }
    tmp = run_dir / "metrics.json.tmp"
    tmp.write_text(json.dumps(result, indent=2))
    tmp.replace(run_dir / "metrics.json")

    from recstack.eval.report import write_report

    histories = {
        alias: _history(component) for alias, component in list(cascade.channels.items()) + [("ranker", cascade.ranker)]
    }
    summary = {
        "dataset": f"{dataset.name} ({dataset.num_users:,} users, {dataset.num_items:,} items, "
        f"{dataset.interactions.height:,} interactions, split {dataset.meta.get('split')})",
        "channels": ", ".join(f"{a} ({c['name']})" for a, c in config.channels.items()),
        "ranker": (config.ranker or {}).get("name", "none"),
        "fit time": f"{fit_seconds:.1f} s",
        "date": result["finished"],
        "machine": result["machine"],
    }
    md, html_path = write_report(run_dir, f"recstack run {config.name}", summary, metrics, histories)
    _print_summary(config, metrics, expectations)
    console.print(f"report: {html_path}  (and {md.name}); metrics: {run_dir / 'metrics.json'}")
    return result


def _check_resume_seed(run_dir: Path, seed: int) -> None:
    """A run folder resumes only the run it holds: refuse to mix stages trained with another seed."""
    saved = run_dir / "config.yaml"
    if not saved.is_file():
        return
    before = (yaml.safe_load(saved.read_text()) or {}).get("seed")
    if before is not None and before != seed:
        raise ConfigError(
            f"{run_dir} holds a run with seed {before}, not {seed}: pass --fresh to replace it, "
            "or --runs-dir to keep both"
        )


def _history(component: Any) -> list[dict]:
    # Rankers keep their TrainResult as `train_result`, sequential retrievers as `result`.
    result = getattr(component, "train_result", None) or getattr(component, "result", None)
    return list(getattr(result, "history", []) or [])


def _print_summary(config: RunConfig, metrics: dict[str, Any], expectations: list[dict]) -> None:
    for split, values in metrics.items():
        rows = {
            "page (ranked)": values["page"],
            "popularity baseline": {k: v for k, v in values["baseline_popular"].items() if k in values["page"]},
        }
        print_metrics(f"{config.name}: {split} (leave-one-out, full ranking)", rows)
        retrieval = values["retrieval"]
        ks = [key for key in retrieval if key.startswith("recall@")]
        table = {channel: {k: retrieval[k][channel] for k in ks} for channel in retrieval[ks[0]]} if ks else {}
        if table:
            print_metrics(f"retrieval recall ({split})", table)
        if "ranker" in values:
            print_metrics(f"ranker ({split})", {"ranker": values["ranker"]})
    for e in expectations:
        mark = "[green]pass[/]" if e["pass"] else "[red]FAIL[/]"
        console.print(f"expect {e['metric']}: {e['got']:.4f} {mark}")


def run_command(
    config: Path | None = typer.Argument(None, help="experiment YAML (default: the ML-100K cascade)"),
    runs_dir: Path = typer.Option(Path("runs"), "--runs-dir", help="where run folders go"),
    fresh: bool = typer.Option(False, "--fresh", help="ignore checkpoints of an earlier run with the same name"),
    seed: int | None = typer.Option(None, "--seed", help="the run's seed (default: the config's `seed`, 42)"),
    threads: int | None = typer.Option(None, "--threads", help="torch threads (default: one per core)"),
) -> None:
    """Train every stage, evaluate each, and write runs/<name>/ with a report."""
    with run_numerics(threads):
        execute(load_run_config(config, seed), runs_dir, fresh)


def bench_command(
    config: Path = typer.Argument(..., help="experiment YAML with an `expect:` section"),
    runs_dir: Path = typer.Option(Path("runs"), "--runs-dir"),
    seed: int | None = typer.Option(None, "--seed", help="the run's seed (default: the config's `seed`)"),
    threads: int | None = typer.Option(None, "--threads", help="torch threads (default: one per core)"),
) -> None:
    """Run a config and say pass/fail against its `expect:` metrics (exit 1 on any failure)."""
    run_config = load_run_config(config, seed)
    if not run_config.expect:
        raise ConfigError(f"{config}: has no `expect:` section to check")
    with run_numerics(threads):
        result = execute(run_config, runs_dir, fresh=True)
    failed = [e for e in result["expect"] if not e["pass"]]
    console.print(f"bench {run_config.name}: {len(result['expect']) - len(failed)} passed, {len(failed)} failed")
    if failed:
        raise typer.Exit(1)
