"""How far the fused page's channel-weight tuning can move test metrics: grids and rounds side by side.

    python benchmarks/page_tuning_grid.py --run runs/cascade-bench/ml-100k-cascade

Each setting tunes the channel weights on valid (page NDCG@k, coordinate ascent) over the run's candidates
and ranker scores, then measures test R@k / N@k. Records go to benchmarks/results/page_tuning.jsonl.
"""

from __future__ import annotations

import argparse
import datetime
import json
from pathlib import Path

from recstack.cascade import Cascade
from recstack.cli.run import set_threads
from recstack.data.dataset import Dataset
from recstack.eval.topk import topk_metrics
from recstack.page.base import build_page

GRIDS = {
    "default": [0.0, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0],
    "wide": [0.0, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0, 10.0, 20.0, 50.0],
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--run", required=True)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", default="benchmarks/results/page_tuning.jsonl")
    args = parser.parse_args()
    set_threads(args.threads)
    cascade = Cascade.load(args.run)
    dataset = Dataset.load(cascade.config.dataset.name)
    k = int(cascade.config.page.get("k", 10))
    valid, test = cascade.page_inputs(dataset, "valid"), cascade.page_inputs(dataset, "test")
    assert test.targets is not None
    for grid_name, grid in GRIDS.items():
        for rounds in (2, 3):
            page = build_page({"k": k, "tune_grid": grid, "tune_rounds": rounds})
            report = page.fit(valid)
            metrics = topk_metrics(page.arrange(test, k).items, test.targets, [k], ("recall", "ndcg"))
            record = {
                "date": datetime.date.today().isoformat(),
                "run": args.run,
                "grid": grid_name,
                "rounds": rounds,
                "channel_weights": report["channel_weights"],
                "valid_ndcg": round(report["ndcg_after"], 4),
                "test": {key: round(float(v), 4) for key, v in metrics.items()},
                "command": f"python benchmarks/page_tuning_grid.py --run {args.run} --threads {args.threads}",
            }
            print(json.dumps(record))
            with Path(args.out).open("a") as out:
                out.write(json.dumps(record) + "\n")


if __name__ == "__main__":
    main()
