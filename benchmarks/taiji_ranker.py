"""Taiji's enhancer features in a ranker: the same ranker with and without them, AUC / GAUC overall,
on the users that have features, and on long-tail users (<= 5 training interactions).

    python benchmarks/taiji_ranker.py --features runs/taiji-bench/features/sft.parquet
    python benchmarks/taiji_ranker.py --features FILE --models dcn_din_mmoe,tokenmixer_large --seeds 0,1,2

Data: the prepared dataset (default amazon-beauty, leave-one-out); every user's last item is the test
positive with 4 popularity-sampled negatives (the Ranker protocol, ranking/samples.py). The features
Parquet (`recstack llm features` or benchmarks/taiji.py --features-users N) covers a subset of users; the
others get no token (a zero embedding), exactly as `recstack run` with an `enhancer:` section feeds them.
Rankers: the `ranker:` section of configs/ranking/<model>.yaml, trained for `--epochs` epochs (batch 1024,
lr 3e-3, early stopping on valid AUC). "with" and "without" share the seed, so they see the same negatives
and batch order; the difference is the enhancer's user columns only. One JSON line per (model, seed) goes to
benchmarks/results/taiji_ranker.jsonl.
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import torch
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))
from recstack.data.dataset import SPLIT_CODES, Dataset
from recstack.eval.pointwise import pointwise_metrics
from recstack.llm.taiji.enhancer import join_user_features
from recstack.ranking.samples import SampleBuilder
from recstack.registry import build
from sequential import RESULTS, append_jsonl

ROOT = Path(__file__).resolve().parents[1]
RESULTS_FILE = RESULTS.with_name("taiji_ranker.jsonl")
LONG_TAIL = 5


def ranker_spec(model: str, epochs: int, seed: int) -> dict[str, Any]:
    config = yaml.safe_load((ROOT / "configs" / "ranking" / f"{model}.yaml").read_text())
    spec = dict(config["ranker"])
    spec["train"] = {
        "epochs": epochs,
        "batch_size": 1024,
        "lr": 3e-3,
        "weight_decay": 0.0,
        "patience": 1,
        "monitor": "auto",
        "seed": seed,
    }
    spec["samples"] = {**spec.get("samples", {}), "seed": seed}
    return spec


def subset_metrics(samples: Any, probs: dict[str, torch.Tensor], users: np.ndarray) -> dict[str, float]:
    """AUC / GAUC / logloss on the sample rows whose user is in `users` (sorted internal ids)."""
    rows = torch.from_numpy(np.isin(samples.users.numpy(), users)).nonzero().flatten()
    labels = {t: v[rows] for t, v in samples.labels.items()}
    out = pointwise_metrics(labels, {t: p[rows] for t, p in probs.items()}, samples.users[rows])
    return {**out, "samples": float(len(rows)), "users": float(len(users))}


def evaluate(ranker: Any, dataset: Dataset, groups: dict[str, np.ndarray]) -> dict[str, dict[str, float]]:
    builder = SampleBuilder(dataset, ranker.config.samples, tasks=ranker.tasks)
    samples = builder.eval_samples("test")
    chunk, max_history = ranker.config.score_rows, ranker.config.samples.max_history
    parts = [
        ranker.predict(samples.inputs(max_history, torch.arange(s, min(s + chunk, len(samples)))))
        for s in range(0, len(samples), chunk)
    ]
    probs = {t: torch.cat([p[t] for p in parts]) for t in ranker.tasks}
    return {name: subset_metrics(samples, probs, users) for name, users in groups.items()}


def user_groups(dataset: Dataset, featured: np.ndarray) -> dict[str, np.ndarray]:
    counts = dataset.interactions.filter(pl.col("split") == SPLIT_CODES["train"]).group_by("user").len().sort("user")
    train = np.zeros(dataset.num_users + 1, np.int64)
    train[counts["user"].to_numpy()] = counts["len"].to_numpy()
    everyone = np.arange(1, dataset.num_users + 1)
    tail = everyone[train[1:] <= LONG_TAIL]
    return {
        "all": everyone,
        "long_tail": tail,
        "with_features": np.sort(featured),
        "long_tail_with_features": np.intersect1d(tail, featured),
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--features", required=True, help="enhancer features Parquet")
    parser.add_argument("--dataset", default="amazon-beauty")
    parser.add_argument("--path", default="../shared/data/amazon-beauty")
    parser.add_argument("--models", default="dcn_din_mmoe,tokenmixer_large")
    parser.add_argument("--seeds", default="0")
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--no-record", action="store_true")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    from recstack.cli.run import ensure_dataset

    dataset = ensure_dataset(args.dataset, args.path)
    enhanced, report = join_user_features(dataset, args.features)
    featured = pl.read_parquet(args.features)["user"].to_numpy().astype(np.int64)
    groups = user_groups(dataset, featured)
    print(f"[taiji-ranker] {report['users_with_features']} users with features; columns {report['columns']}")
    for model in args.models.split(","):
        for seed in [int(s) for s in args.seeds.split(",")]:
            record: dict[str, Any] = {
                "model": model,
                "seed": seed,
                "features": args.features,
                "columns": report["columns"],
            }
            for arm, data in (("without", dataset), ("with", enhanced)):
                ranker = build("ranker", ranker_spec(model, args.epochs, seed), where=f"ranker {model}")
                started = time.perf_counter()
                ranker.fit(data)
                record[f"{arm}_fit_seconds"] = round(time.perf_counter() - started, 1)
                record[arm] = evaluate(ranker, data, groups)
                task = ranker.primary_task
                line = ", ".join(
                    f"{g} AUC {m[f'{task}/auc']:.4f} GAUC {m[f'{task}/gauc']:.4f}" for g, m in record[arm].items()
                )
                print(f"[taiji-ranker] {model} seed {seed} {arm}: {line}", flush=True)
            record.update(
                {
                    "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
                    "machine": f"{platform.machine()} ({os.cpu_count()} cpus), torch {torch.__version__}",
                    "command": "python benchmarks/taiji_ranker.py "
                    + " ".join(argv if argv is not None else sys.argv[1:]),
                    "dataset": args.dataset,
                    "threads": args.threads,
                    "epochs": args.epochs,
                    "long_tail_max_train": LONG_TAIL,
                }
            )
            if not args.no_record:
                append_jsonl(RESULTS_FILE, record)


if __name__ == "__main__":
    main()
