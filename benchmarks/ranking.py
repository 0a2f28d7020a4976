"""Benchmark the rankers of configs/ranking/*.yaml: AUC/GAUC per task, params, FLOPs, throughput, MFU.

    python benchmarks/ranking.py --dataset world                         # every config, world data
    python benchmarks/ranking.py --dataset ml-100k --models dcn_din_mmoe,rankmixer
    python benchmarks/ranking.py --dataset world --models rankmixer --set features.dim=32 --set train.lr=1e-3
    python benchmarks/ranking.py --dataset world --models tokenmixer_large --scale     # scaling sweep
    python benchmarks/ranking.py --table --dataset world                 # Markdown table from the results
    python benchmarks/ranking.py --dataset world --oracle                # the world's true-probability ceiling
    python benchmarks/ranking.py --update-expect [--models NAME]         # configs' expect: from recorded runs

A config (configs/ranking/<model>.yaml) names the ranker and its settings (`ranker:`), per-dataset
overrides with the training budget (`datasets: {world: {...}, ml-100k: {...}}`), the scaling sweep
(`scale:`, a list of >= 4 ranker overrides, smallest first, run on the dataset given), compute
settings (`compute:`, ComputeConfig) and `expect:` bounds on `<dataset>/test/<task>/<metric>`
(checked like `recstack bench`: min / max / value ± tolerance).

Data. world: the cached benchmark world (recstack.world.benchmark_data: 1M impressions, 4 scenarios,
click / like / long_view / purchase, temporal 80/10/10 split); ml-100k: the catalogue's ML-100K
(from /work/shared/data/ml-100k when present), random-user holdout (test: the last 20% of the ratings
of 20% of the users, valid: of another 10%), like = rating >= 4 and a
view task, 4 popularity-sampled negatives per positive (the Ranker protocol, ranking/samples.py).
Training: the shared Trainer with early stopping on valid `<primary task>/auc`; test metrics once.

Each run appends one JSON line to benchmarks/results/ranking.jsonl: test metrics per task, params
(total / embedding / dense / activated), FLOPs per sample (forward and training, traced), model-step
throughput (train / score samples/s), end-to-end training throughput of the real fit, MFU against a
measured fp32 matmul peak (or `compute.peak_flops`), and the expect checks. A `--scale` run adds a
"scaling" line with the least-squares fit of the metric on log10(training FLOPs per sample), Kunlun's
scaling efficiency against the dcn_din_mmoe sweep when one is recorded, and a PNG under
benchmarks/results/. Single-threaded by default (torch.set_num_threads(1)).
"""

from __future__ import annotations

import argparse
import copy
import json
import platform
import sys
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import torch

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # `python benchmarks/ranking.py` puts benchmarks/ first, not the repo root
    sys.path.insert(0, str(ROOT))

from benchmarks.sequential import parse_overrides  # noqa: E402

from recstack.cascade import ExpectSpec  # noqa: E402
from recstack.config import from_dict, load_yaml, to_dict  # noqa: E402
from recstack.data.dataset import Dataset  # noqa: E402
from recstack.errors import ConfigError  # noqa: E402
from recstack.ranking.compute import ComputeConfig, ranker_compute, resolve_peak  # noqa: E402
from recstack.ranking.samples import SampleBuilder  # noqa: E402
from recstack.ranking.scaling import fit_scaling, scaling_efficiency, write_scaling_plot  # noqa: E402
from recstack.registry import build  # noqa: E402

CONFIG_DIR = ROOT / "configs" / "ranking"
RESULTS = ROOT / "benchmarks" / "results" / "ranking.jsonl"
DATA_ROOT = Path("/work/shared/data")
DATASETS = ("world", "ml-100k")
BASELINE = "dcn_din_mmoe"
LOWER_IS_BETTER = ("logloss",)


@dataclass
class RankingBenchConfig:
    """One configs/ranking/*.yaml (see the module docstring)."""

    name: str
    ranker: dict[str, Any]
    datasets: dict[str, dict[str, Any]] = field(default_factory=dict)
    scale: list[dict[str, Any]] = field(default_factory=list)
    compute: ComputeConfig = field(default_factory=ComputeConfig)
    expect: dict[str, ExpectSpec] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not isinstance(self.ranker, dict) or "name" not in self.ranker:
            raise ConfigError(f"{self.name}: ranker: expected a mapping with a 'name' key")
        unknown = sorted(set(self.datasets) - set(DATASETS))
        if unknown:
            raise ConfigError(f"{self.name}: datasets.{unknown[0]}: unknown dataset; known: {', '.join(DATASETS)}")
        if self.scale and len(self.scale) < 4:
            raise ConfigError(f"{self.name}: scale: a scaling sweep needs at least 4 sizes, got {len(self.scale)}")
        for key in self.expect:
            if key.split("/", 1)[0] not in DATASETS:
                raise ConfigError(f"{self.name}: expect.{key}: must start with a dataset ({', '.join(DATASETS)})")

    def ranker_spec(self, dataset: str, size: int | None = None, overrides: dict[str, Any] | None = None) -> dict:
        """ranker + datasets[dataset] (+ scale[size]) + overrides, deep-merged in that order."""
        spec = merge(self.ranker, self.datasets.get(dataset, {}))
        if size is not None:
            spec = merge(spec, self.scale[size])
        return merge(spec, overrides or {})

    def build_ranker(self, dataset: str, size: int | None = None, overrides: dict[str, Any] | None = None) -> Any:
        spec = self.ranker_spec(dataset, size, overrides)
        return build("ranker", spec, where=f"{self.name}.ranker")


def merge(base: dict[str, Any], update: dict[str, Any]) -> dict[str, Any]:
    """Deep merge: nested mappings merge key by key; anything else in `update` replaces."""
    out = copy.deepcopy(base)
    for key, value in update.items():
        out[key] = (
            merge(out[key], value)
            if isinstance(value, dict) and isinstance(out.get(key), dict)
            else copy.deepcopy(value)
        )
    return out


def load_bench_config(path: str | Path) -> RankingBenchConfig:
    path = Path(path)
    data = load_yaml(path)
    data.setdefault("name", path.stem)
    return from_dict(RankingBenchConfig, data, where=path.name)


def config_paths(models: list[str] | None) -> list[Path]:
    paths = {p.stem: p for p in sorted(CONFIG_DIR.glob("*.yaml"))}
    if not models:
        return list(paths.values())
    missing = [m for m in models if m not in paths]
    if missing:
        raise ConfigError(f"--models: no config for {missing[0]!r} in {CONFIG_DIR}; have: {', '.join(paths)}")
    return [paths[m] for m in models]


# ---- data ---------------------------------------------------------------------------------------------
def load_dataset(name: str, data_dir: Path | None) -> tuple[Dataset, float]:
    """(prepared dataset, seconds to load or generate it)."""
    started = time.perf_counter()
    if name == "world":
        from recstack.world.benchmark_data import benchmark_world

        dataset = benchmark_world(data_dir=data_dir)
    elif name == "ml-100k":
        from recstack.data import catalog
        from recstack.data.prepare import PrepareConfig, prepare

        folder = DATA_ROOT / "ml-100k"
        raw = catalog.load_raw("ml-100k", folder if folder.is_dir() else None)
        # Random-user holdout: 10% / 20% of users are valid / test users whose last 20% of ratings are held
        # out; their earlier ratings stay in train and form their history (a global time cut would make
        # most test users cold-start: no history, untrained user ids).
        config = from_dict(
            PrepareConfig,
            {
                **catalog.default_prepare("ml-100k"),
                "split": "random_user",
                "valid_fraction": 0.1,
                "test_fraction": 0.2,
                "holdout_fraction": 0.2,
            },
            "prepare",
        )
        dataset = prepare(raw, config, name="ml-100k")
    else:
        raise ConfigError(f"--dataset: unknown {name!r}; known: {', '.join(DATASETS)}")
    return dataset, time.perf_counter() - started


# ---- one model ----------------------------------------------------------------------------------------
def run_one(
    config: RankingBenchConfig,
    dataset: Dataset,
    dataset_name: str,
    overrides: dict[str, Any],
    peak: tuple[float, str],
    size: int | None = None,
    progress: bool = False,
) -> dict[str, Any]:
    """Fit, evaluate on test, trace compute; returns the JSON record (without command/date)."""
    ranker = config.build_ranker(dataset_name, size, overrides)
    ranker.config.train.progress = progress
    eval_seconds = [0.0]
    evaluate = ranker.evaluate_samples

    def timed_evaluate(samples: Any) -> dict[str, float]:  # valid evaluation inside fit, timed apart
        started = time.perf_counter()
        try:
            return evaluate(samples)
        finally:
            eval_seconds[0] += time.perf_counter() - started

    ranker.evaluate_samples = timed_evaluate
    started = time.perf_counter()
    ranker.fit(dataset)
    fit_seconds = time.perf_counter() - started
    ranker.evaluate_samples = evaluate
    result = ranker.train_result
    builder = SampleBuilder(dataset, ranker.config.samples, tasks=ranker.tasks)
    train_rows = _train_rows(builder, ranker.config.samples.negatives_per_positive)
    cfg_train = ranker.config.train
    epochs_run = len(result.history)
    per_epoch = min(train_rows, (cfg_train.max_steps_per_epoch or 10**12) * cfg_train.batch_size)
    seen = per_epoch * epochs_run
    train_seconds = sum(r["seconds"] for r in result.history) - eval_seconds[0]

    started = time.perf_counter()
    test = builder.eval_samples("test")
    metrics = ranker.evaluate_samples(test)
    test_seconds = time.perf_counter() - started
    compute = ranker_compute(ranker, test, config.compute, peak)
    e2e = seen / max(train_seconds, 1e-9)
    return {
        "dataset": dataset_name,
        "model": ranker.name,
        "config": config.name,
        "tasks": ranker.tasks,
        "primary_task": ranker.primary_task,
        "test": {k: round(v, 4) for k, v in metrics.items()},
        "test_samples": len(test),
        "valid_best": {k: round(v, 4) for k, v in result.best_metrics.items()},
        "best_epoch": result.best_epoch,
        "epochs_run": epochs_run,
        "stopped_early": result.stopped_early,
        "train_rows": train_rows,
        "train_samples_seen": seen,
        "params": compute.params,
        "flops_per_sample": {"forward": compute.forward_flops, "train": compute.train_flops},
        "flops_by_module": {k: round(v) for k, v in compute.flops_by_module.items()},
        "throughput": {
            "train_e2e_samples_per_s": round(e2e, 1),
            "train_step_samples_per_s": round(compute.train_samples_per_s, 1),
            "score_samples_per_s": round(compute.score_samples_per_s, 1),
            "batch_size": compute.batch_size,
        },
        "mfu": {
            "train_step": compute.mfu,
            "train_e2e": compute.train_flops * e2e / compute.peak_flops,
            "score": compute.score_mfu,
            "peak_flops": compute.peak_flops,
            "peak_source": compute.peak_source,
        },
        "seconds": {
            "fit": round(fit_seconds, 1),
            "train": round(train_seconds, 1),
            "valid_eval": round(eval_seconds[0], 1),
            "test_eval": round(test_seconds, 1),
        },
        "ranker_config": to_dict(ranker.config),
    }


def _train_rows(builder: SampleBuilder, negatives: int) -> int:
    """Rows one epoch trains on: every train row, or positives × (1 + negatives) for positive-only logs."""
    from recstack.data.dataset import TRAIN

    positives = int((builder.split == TRAIN).sum())
    return positives * (1 + negatives) if builder.positive_only else positives


def check_expect(config: RankingBenchConfig, dataset_name: str, test: dict[str, float]) -> list[dict[str, Any]]:
    """Expectations on this dataset's test metrics ("<dataset>/test/<task>/<metric>")."""
    flat = {f"{dataset_name}/test/{k}": v for k, v in test.items()}
    checks = []
    for key, spec in config.expect.items():
        if not key.startswith(dataset_name + "/"):
            continue
        if key not in flat:
            raise ConfigError(f"{config.name}: expect.{key}: no such metric; have {', '.join(sorted(flat))}")
        checks.append({"metric": key, "got": flat[key], "pass": spec.check(flat[key]), **to_dict(spec)})
    return checks


def append_result(record: dict[str, Any], path: Path = RESULTS) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a") as f:  # one line per run: appends are atomic enough for a log of results
        f.write(json.dumps(record, default=float) + "\n")


def read_results(path: Path = RESULTS) -> list[dict[str, Any]]:
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


# ---- scaling ------------------------------------------------------------------------------------------
def run_scale(
    config: RankingBenchConfig,
    dataset: Dataset,
    dataset_name: str,
    overrides: dict[str, Any],
    peak: tuple[float, str],
    metric: str | None,
    header: dict[str, Any],
    write: bool,
    progress: bool,
) -> dict[str, Any]:
    if len(config.scale) < 4:
        raise ConfigError(f"{config.name}: --scale needs a `scale:` list of >= 4 sizes in its config")
    points = []
    for size in range(len(config.scale)):
        record = run_one(config, dataset, dataset_name, overrides, peak, size, progress)
        record.update(header, kind="scale_point", size=size, size_overrides=config.scale[size])
        metric = metric or f"{record['primary_task']}/auc"
        print(
            f"  size {size}: train FLOPs/sample {record['flops_per_sample']['train']:.3g}, "
            f"dense params {record['params']['dense']:,}, {metric} {record['test'].get(metric)}",
            flush=True,
        )
        if write:
            append_result(record)
        points.append(record)
    assert metric is not None
    if metric not in points[0]["test"]:
        raise ConfigError(f"--metric {metric!r} is not a test metric; have {', '.join(points[0]['test'])}")
    higher = not any(metric.endswith(s) for s in LOWER_IS_BETTER)
    flops = [p["flops_per_sample"]["train"] for p in points]
    values = [p["test"][metric] for p in points]
    fit = fit_scaling(flops, values, higher_is_better=higher)
    out = {
        **header,
        "kind": "scaling",
        "dataset": dataset_name,
        "model": config.ranker["name"],
        "config": config.name,
        "metric": metric,
        "flops": flops,
        "values": values,
        "dense_params": [p["params"]["dense"] for p in points],
        "fit": fit.to_dict(),
        "sizes": config.scale,
    }
    previous = [
        r
        for r in read_results()
        if r.get("kind") == "scaling" and r.get("dataset") == dataset_name and r.get("metric") == metric
    ]
    latest = {r["model"]: r for r in previous}
    latest[out["model"]] = out
    if BASELINE in latest and out["model"] != BASELINE:
        base = latest[BASELINE]["fit"]
        base_fit = fit_scaling(latest[BASELINE]["flops"], latest[BASELINE]["values"], base["higher_is_better"])
        out["scaling_efficiency_vs_" + BASELINE] = scaling_efficiency(fit, base_fit)
    series = {m: (r["flops"], r["values"], fit_scaling(r["flops"], r["values"], higher)) for m, r in latest.items()}
    safe = metric.replace("/", "_")
    results_dir = RESULTS.parent
    if write:
        own = write_scaling_plot(
            results_dir / f"scaling_{dataset_name}_{out['model']}_{safe}.png",
            {out["model"]: series[out["model"]]},
            metric,
            f"{out['model']} on {dataset_name}",
        )
        both = write_scaling_plot(
            results_dir / f"scaling_{dataset_name}_{safe}.png", series, metric, f"ranking scaling on {dataset_name}"
        )
        out["plots"] = [str(own.relative_to(ROOT)), str(both.relative_to(ROOT))]
        append_result(out)
    print(
        f"SCALING {out['model']} {metric}: slope {fit.slope:+.5f} per decade of FLOPs, intercept "
        f"{fit.intercept:.4f}, R² {fit.r2:.3f}"
        + (
            f", efficiency vs {BASELINE} {out['scaling_efficiency_vs_' + BASELINE]:.2f}"
            if "scaling_efficiency_vs_" + BASELINE in out
            else ""
        ),
        flush=True,
    )
    return out


# ---- table --------------------------------------------------------------------------------------------
def markdown_table(
    records: list[dict[str, Any]], dataset: str, max_seen: int | None = None, min_seen: int | None = None
) -> str:
    """Latest benchmark record per model on `dataset` as a Markdown table (only runs that trained on at
    most `max_seen` / at least `min_seen` samples when given, e.g. to put runs of one budget side by side)."""
    latest: dict[str, dict[str, Any]] = {}  # label -> record; ablations (--set runs) get their own rows
    for r in records:
        if (
            r.get("kind", "benchmark") == "benchmark"
            and r.get("dataset") == dataset
            and (max_seen is None or r["train_samples_seen"] <= max_seen)
            and (min_seen is None or r["train_samples_seen"] >= min_seen)
        ):
            label = r.get("config", r["model"]) + (f" [{', '.join(r['set'])}]" if r.get("set") else "")
            latest[label] = r
    if not latest:
        return f"(no ranking results for {dataset})"
    tasks = list(next(iter(latest.values()))["tasks"])
    head = (
        ["model"]
        + [f"{t} AUC / GAUC" for t in tasks]
        + ["params dense (activated)", "emb params", "FLOPs/sample fwd", "train samples/s", "MFU", "samples seen"]
    )
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for model, r in latest.items():
        p, t = r["params"], r["test"]
        dense = f"{p['dense'] / 1e6:.2f}M" + (f" ({p['activated'] / 1e6:.2f}M)" if p["activated"] != p["dense"] else "")
        cells = [model] + [
            f"{t.get(f'{k}/auc', float('nan')):.4f} / {t.get(f'{k}/gauc', float('nan')):.4f}" for k in tasks
        ]
        cells += [
            dense,
            f"{p['embedding'] / 1e6:.2f}M",
            f"{r['flops_per_sample']['forward'] / 1e6:.2f}M",
            f"{r['throughput']['train_e2e_samples_per_s']:,.0f}",
            f"{100 * r['mfu']['train_e2e']:.2f}%",
            f"{r['train_samples_seen'] / 1e3:,.0f}k",
        ]
        lines.append("| " + " | ".join(cells) + " |")
    oracles = [r for r in records if r.get("kind") == "oracle" and r.get("dataset") == dataset]
    if oracles:
        t = oracles[-1]["test"]
        cells = ["oracle: true probabilities, position-blind"] + [
            f"{t.get(f'{k}/auc', float('nan')):.4f} / {t.get(f'{k}/gauc', float('nan')):.4f}" for k in tasks
        ]
        lines.append("| " + " | ".join(cells + ["-"] * (len(head) - len(cells))) + " |")
    return "\n".join(lines)


EXPECT_METRICS = {"world": ("click", "like", "purchase"), "ml-100k": ("like", "view")}
EXPECT_HEADER = "# # # expect:"


def update_expect(path: Path, records: list[dict[str, Any]]) -> str:
    """Rewrite the `expect:` block of one config from its latest recorded run per dataset (no --set
    overrides): value = the measured AUC / GAUC, tolerance 0.01 (0.02 for the rare purchase label).
    Written to a temporary file, then renamed. Returns the new block."""
    name = load_bench_config(path).name
    lines = ["expect:"]
    for dataset, tasks in EXPECT_METRICS.items():
        runs = [
            r
            for r in records
            if r.get("kind", "benchmark") == "benchmark"
            and r.get("dataset") == dataset
            and r.get("config", r.get("model")) == name
            and not r.get("set")
        ]
        if not runs:
            continue
        r = runs[-1]
        stamp = f"{r['date'][:16]}Z, {r['train_samples_seen'] / 1e3:,.0f}k samples"
        for task in tasks:
            for metric in ("auc", "gauc"):
                key = f"{task}/{metric}"
                if key in r["test"]:
                    tolerance = 0.02 if task == "purchase" else 0.01
                    lines.append(
                        f"  {dataset}/test/{key}: {{value: {r['test'][key]:.4f}, tolerance: {tolerance}}}   # {stamp}"
                    )
    text = path.read_text()
    cut = text.find("\nexpect:", max(text.find(EXPECT_HEADER), 0))  # the block after the header comment
    head = text[: cut + 1] if cut >= 0 else text.rstrip("\n") + "\n"
    block = "\n".join(lines) + "\n"
    tmp = path.with_suffix(".yaml.tmp")
    tmp.write_text(head + block)
    tmp.replace(path)
    return block


# ---- main ---------------------------------------------------------------------------------------------
def main(argv: list[str] | None = None) -> list[dict[str, Any]]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", choices=DATASETS, default="world")
    parser.add_argument("--models", default="", help="comma-separated config names (default: every config)")
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="ranker override on top of the config, e.g. features.dim=32, train.lr=1e-3",
    )
    parser.add_argument("--scale", action="store_true", help="run the config's scaling sweep (one model)")
    parser.add_argument("--metric", default=None, help="scaling metric (default <primary task>/auc)")
    parser.add_argument("--data-dir", type=Path, default=None, help="world cache root (default RECSTACK_HOME)")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--progress", action="store_true")
    parser.add_argument("--no-write", action="store_true", help="do not append to benchmarks/results")
    parser.add_argument("--table", action="store_true", help="print the Markdown table of recorded results")
    parser.add_argument(
        "--min-seen", type=int, default=None, help="--table: only runs that trained on at least this many samples"
    )
    parser.add_argument(
        "--update-expect",
        action="store_true",
        help="rewrite the expect: block of the --models configs from their latest recorded runs",
    )
    parser.add_argument(
        "--max-seen", type=int, default=None, help="--table: only runs that trained on at most this many samples"
    )
    parser.add_argument(
        "--oracle",
        action="store_true",
        help="world only: record the AUC/GAUC of the world's true probabilities (the ceiling)",
    )
    args = parser.parse_args(argv)
    if args.table:
        print(markdown_table(read_results(), args.dataset, args.max_seen, args.min_seen))
        return []
    if args.update_expect:
        records = read_results()
        for path in config_paths([m for m in args.models.split(",") if m] or None):
            print(f"{path}:\n{update_expect(path, records)}")
        return []

    torch.set_num_threads(args.threads)
    models = [m for m in args.models.split(",") if m]
    configs = [load_bench_config(p) for p in config_paths(models)]
    if args.scale and len(configs) != 1:
        raise ConfigError("--scale runs one model per invocation: pass --models <one config>")
    overrides = parse_overrides(args.set)
    for config in configs:  # unknown names / keys fail here, before any data or training
        config.build_ranker(args.dataset, None, overrides)
        for size in range(len(config.scale) if args.scale else 0):
            config.build_ranker(args.dataset, size, overrides)
    dataset, data_seconds = load_dataset(args.dataset, args.data_dir)
    print(
        f"{args.dataset}: {dataset.num_users:,} users, {dataset.num_items:,} items, "
        f"{dataset.interactions.height:,} rows ({data_seconds:.1f}s to load/generate)",
        flush=True,
    )
    peak = resolve_peak(configs[0].compute)
    print(f"peak {peak[0] / 1e9:.1f} GFLOP/s ({peak[1]})", flush=True)
    header = {
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "machine": f"{platform.processor() or platform.machine()}, torch {torch.__version__}, "
        f"{torch.get_num_threads()} threads",
        "command": "python benchmarks/ranking.py " + " ".join(sys.argv[1:] if argv is None else argv),
        "data": {
            "users": dataset.num_users,
            "items": dataset.num_items,
            "rows": dataset.interactions.height,
            "counts": dataset.meta.get("counts"),
            "split": dataset.meta.get("split"),
            "prepare": dataset.meta.get("config"),
            "generation": {k: v for k, v in dataset.meta.get("generation", {}).items() if k != "config"},
        },
    }
    if args.oracle:
        from recstack.world.benchmark_data import oracle_metrics

        if args.dataset != "world":
            raise ConfigError("--oracle: only the world has true probabilities")
        record = {
            **header,
            "kind": "oracle",
            "dataset": "world",
            "test": {k: round(v, 4) for k, v in oracle_metrics(dataset, positions=False).items()},
            "test_with_positions": {k: round(v, 4) for k, v in oracle_metrics(dataset).items()},
        }
        print("ORACLE (position-blind) " + " ".join(f"{k}={v:.4f}" for k, v in record["test"].items()))
        if not args.no_write:
            append_result(record)
        return [record]
    if args.scale:
        return [
            run_scale(
                configs[0],
                dataset,
                args.dataset,
                overrides,
                peak,
                args.metric,
                header,
                not args.no_write,
                args.progress,
            )
        ]
    records = []
    for config in configs:
        print(f"== {config.name}", flush=True)
        record = {
            **header,
            "kind": "benchmark",
            **run_one(config, dataset, args.dataset, overrides, peak, progress=args.progress),
        }
        record["overrides"], record["set"] = overrides, list(args.set)
        record["expect"] = check_expect(config, args.dataset, record["test"]) if not overrides else []
        print("TEST " + " ".join(f"{k}={v:.4f}" for k, v in record["test"].items() if "/" in k), flush=True)
        flops, rate = record["flops_per_sample"], record["throughput"]["train_e2e_samples_per_s"]
        print(
            f"params {record['params']}, FLOPs/sample fwd {flops['forward']:.4g} train {flops['train']:.4g}, "
            f"train {rate:.0f} samples/s (e2e), {record['seconds']['fit']}s fit",
            flush=True,
        )
        for check in record["expect"]:
            print(f"expect {check['metric']}: {check['got']:.4f} {'pass' if check['pass'] else 'FAIL'}", flush=True)
        if not args.no_write:
            append_result(record)
        records.append(record)
    return records


if __name__ == "__main__":
    main()
