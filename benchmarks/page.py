"""Page methods side by side on one trained cascade: fused, ranker top-k, MMR, PageLLM and its ablations.

    python benchmarks/page.py --run runs/cascade-bench/ml-100k-cascade --seeds 0,1,2

Every method arranges the same merged candidates with the same ranker scores (the run's), fitted on
the valid split and measured on test: page R@10, N@10, NDCG@100 of the whole arrangement against the
held-out next item, the categories on the page (first semantic-ID level of the item space), the fit
time and the arranger's pages per second. The run's channels alone are listed for reference (their own
order, from the same candidates). Records go to benchmarks/results/page.jsonl.
"""

from __future__ import annotations

import argparse
import datetime
import json
import time
from pathlib import Path
from typing import Any

import torch

from recstack.cascade import Cascade
from recstack.cli.run import set_threads
from recstack.data.dataset import Dataset
from recstack.eval.topk import topk_metrics
from recstack.page.base import build_page, distinct_per_row
from recstack.page.item_space import ItemSpaceConfig, item_space

METHODS: dict[str, dict[str, Any]] = {
    "fused": {"name": "fused"},
    "ranker_topk": {"name": "ranker_topk"},
    "mmr": {"name": "mmr"},
    "pagellm": {"name": "pagellm"},
    "pagellm_no_page_reward": {"name": "pagellm", "page_reward": False},
    "pagellm_no_item_reward": {"name": "pagellm", "item_reward": False},
    "pagellm_sft_only": {"name": "pagellm", "ppo": {"steps": 0}},
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--run", required=True, help="a trained run folder (recstack run)")
    parser.add_argument("--dataset", default=None, help="dataset name or folder (default: the run's)")
    parser.add_argument("--methods", default=",".join(METHODS))
    parser.add_argument("--seeds", default="0", help="seeds of the learned arrangers")
    parser.add_argument("--set", default="{}", help="JSON merged into every learned arranger's config")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", default="benchmarks/results/page.jsonl")
    args = parser.parse_args()
    set_threads(args.threads)

    cascade = Cascade.load(args.run)
    dataset = Dataset.load(args.dataset or cascade.config.dataset.name)
    k = int(cascade.config.page.get("k", 10))
    fused_settings = {
        key: cascade.config.page[key] for key in ("weights", "channel_weights") if key in cascade.config.page
    }
    valid = cascade.page_inputs(dataset, "valid")
    test = cascade.page_inputs(dataset, "test")
    assert test.targets is not None
    categories = item_space(cascade.retrieval_view(dataset), ItemSpaceConfig()).codes[:, 0]
    channels = channel_rows(cascade, test, k)
    print(f"{dataset.name}: {len(test.batch)} test users, {test.candidates.k} merged candidates, page k={k}")
    for name, metrics in channels.items():
        print(f"  channel {name:>12}: R@{k} {metrics[f'recall@{k}']:.4f}  N@{k} {metrics[f'ndcg@{k}']:.4f}")

    records = []
    for method in args.methods.split(","):
        seeds = [int(s) for s in args.seeds.split(",")] if method.startswith("pagellm") or method == "mmr" else [0]
        for seed in seeds:
            spec = {**METHODS[method], "k": k, "weights": fused_settings.get("weights", {})}
            if method != "ranker_topk":  # the others build on the run's tuned fused page
                spec.update(fused_settings, tune=False)
            if method.startswith("pagellm"):
                spec = {**spec, "seed": seed, **json.loads(args.set)}
            arranger = build_page(spec)
            started = time.perf_counter()
            report = arranger.fit(valid)
            fit_seconds = time.perf_counter() - started
            started = time.perf_counter()
            with torch.no_grad():
                page = arranger.arrange(test, k)
            serve_seconds = time.perf_counter() - started
            metrics = topk_metrics(page.items, test.targets, [k, 100], ("recall", "ndcg"))
            top = page.items[:, :k]
            distinct = distinct_per_row(categories[top], top > 0).float().mean()
            record = {
                "date": datetime.date.today().isoformat(),
                "dataset": dataset.name,
                "run": args.run,
                "method": method,
                "seed": seed,
                "spec": spec,
                "test": {key: round(float(value), 4) for key, value in metrics.items()},
                "categories_on_page": round(float(distinct), 3),
                "fit_seconds": round(fit_seconds, 1),
                "pages_per_second": round(len(test.batch) / serve_seconds, 1),
                "report": summary(report),
                "channels": channels,
                "threads": args.threads,
                "command": "python benchmarks/page.py " + " ".join(f"--{k} {v}" for k, v in vars(args).items()),
            }
            records.append(record)
            t = record["test"]
            print(
                f"{method:>24} seed {seed}: R@{k} {t[f'recall@{k}']:.4f}  N@{k} {t[f'ndcg@{k}']:.4f}  "
                f"NDCG@100 {t['ndcg@100']:.4f}  cats {distinct:.2f}  fit {fit_seconds:.0f}s  "
                f"{record['pages_per_second']:.0f} pages/s",
                flush=True,
            )
            with Path(args.out).open("a") as out:
                out.write(json.dumps(record) + "\n")


def channel_rows(cascade: Cascade, test: Any, k: int) -> dict[str, dict[str, float]]:
    per_channel, _ = cascade.retrieve(test.batch, k)
    return {
        name: {
            key: round(float(v), 4) for key, v in topk_metrics(c.items, test.targets, [k], ("recall", "ndcg")).items()
        }
        for name, c in per_channel.items()
    }


def summary(report: dict[str, Any]) -> dict[str, Any]:
    """The fit report without long lists."""
    return {key: value for key, value in report.items() if key not in ("history",)}


if __name__ == "__main__":
    main()
