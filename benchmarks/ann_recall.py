"""Recall lost by FAISS serving of an embedding channel, against exact scoring, on a trained run.

    python benchmarks/ann_recall.py --run runs/cascade-bench/amazon-beauty-cascade --channel sasrec

For each index setting, the channel retrieves the top K of the test users (history left out) exactly
and through the index; "overlap@K" = the share of the exact top K the index also returns (1.0 = no
loss), "test R@K" = recall of the held-out item both ways, and users/s of each path. Records go to
benchmarks/results/ann.jsonl.
"""

from __future__ import annotations

import argparse
import datetime
import json
import time
from pathlib import Path

import torch

from recstack.cli.run import set_threads
from recstack.data.dataset import Dataset
from recstack.eval.topk import topk_metrics
from recstack.retrieval.base import Retriever

SETTINGS = {
    "hnsw-ef64": {"kind": "hnsw", "ef_search": 64},
    "hnsw-ef128": {"kind": "hnsw", "ef_search": 128},
    "hnsw-ef256": {"kind": "hnsw", "ef_search": 256},
    "ivf-nprobe10": {"kind": "ivf", "nprobe": 10},
    "ivf-nprobe30": {"kind": "ivf", "nprobe": 30},
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--run", required=True)
    parser.add_argument("--channel", default="sasrec")
    parser.add_argument("--k", type=int, default=200, help="top K compared (the cascade's merge quota)")
    parser.add_argument("--users", type=int, default=5000, help="test users (the first N)")
    parser.add_argument("--settings", default=",".join(SETTINGS))
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", default="benchmarks/results/ann.jsonl")
    args = parser.parse_args()
    set_threads(args.threads)
    run = Path(args.run)
    channel = Retriever.load(run / "channels" / args.channel)
    config = json.loads((run / "config.json").read_text())
    dataset = Dataset.load(config["dataset"]["name"])
    users, targets = dataset.eval_users("test")
    users, targets = users[: args.users], targets.select(torch.arange(min(args.users, users.numel())))
    batch = dataset.user_batch(users, before="test", features=("timestamp",))

    started = time.perf_counter()
    exact = channel.retrieve(batch, args.k)
    exact_seconds = time.perf_counter() - started
    exact_recall = topk_metrics(exact.items, targets, [10, args.k], ("recall",))
    print(f"{args.channel} on {dataset.name}: {dataset.num_items} items, {users.numel()} test users, top {args.k}")
    print(f"  exact: {users.numel() / exact_seconds:.0f} users/s, R@10 {exact_recall['recall@10']:.4f}")
    for name in args.settings.split(","):
        channel.config.serving, channel.ann = "faiss", None
        for key, value in SETTINGS[name].items():
            setattr(channel.config.ann, key, value)
        channel.retrieve(batch.select(torch.arange(1)), args.k)  # builds the index (not timed)
        started = time.perf_counter()
        served = channel.retrieve(batch, args.k)
        seconds = time.perf_counter() - started
        hits = (served.items.unsqueeze(2) == exact.items.unsqueeze(1)) & (exact.items.unsqueeze(1) > 0)
        overlap = float(hits.any(1).sum() / (exact.items > 0).sum())
        recall = topk_metrics(served.items, targets, [10, args.k], ("recall",))
        record = {
            "date": datetime.date.today().isoformat(),
            "run": args.run,
            "channel": args.channel,
            "dataset": dataset.name,
            "items": dataset.num_items,
            "users": int(users.numel()),
            "k": args.k,
            "setting": name,
            "ann": SETTINGS[name],
            f"overlap@{args.k}": round(overlap, 4),
            "recall_exact": {key: round(float(v), 4) for key, v in exact_recall.items()},
            "recall_ann": {key: round(float(v), 4) for key, v in recall.items()},
            "users_per_second_exact": round(users.numel() / exact_seconds, 1),
            "users_per_second_ann": round(users.numel() / seconds, 1),
            "threads": args.threads,
        }
        print(
            f"  {name:>13}: overlap@{args.k} {overlap:.4f}  R@10 {recall['recall@10']:.4f}  "
            f"R@{args.k} {recall[f'recall@{args.k}']:.4f} (exact {exact_recall[f'recall@{args.k}']:.4f})  "
            f"{record['users_per_second_ann']:.0f} users/s",
            flush=True,
        )
        with Path(args.out).open("a") as out:
            out.write(json.dumps(record) + "\n")


if __name__ == "__main__":
    main()
