"""Benchmark: popularity baseline, leave-one-out, full ranking over all items (history masked).

.venv/bin/python benchmarks/popularity.py --dataset amazon-beauty --path ../shared/data/amazon-beauty
"""

from __future__ import annotations

import argparse
import json
import time
from datetime import datetime, timezone
from pathlib import Path

from recstack.data import catalog
from recstack.data.prepare import prepare
from recstack.eval.evaluator import evaluate_retriever
from recstack.retrieval.popular import Popular


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", default="amazon-beauty")
    parser.add_argument("--path", default=None, help="folder with the raw files (default: catalogue fetch)")
    args = parser.parse_args()
    started = time.perf_counter()
    dataset = prepare(catalog.load_raw(args.dataset, args.path), name=args.dataset)
    model = Popular().fit(dataset)
    result = {
        "benchmark": "popularity",
        "dataset": args.dataset,
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "users": dataset.num_users,
        "items": dataset.num_items,
    }
    for split in ("valid", "test"):
        metrics = evaluate_retriever(model, dataset, split, ks=(5, 10, 20))
        result[split] = {k: round(v, 4) for k, v in metrics.items() if "@" in k}
    result["seconds"] = round(time.perf_counter() - started, 1)
    print(json.dumps(result, indent=2))
    out = Path(__file__).parent / "results" / f"popularity_{args.dataset}.json"
    out.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
