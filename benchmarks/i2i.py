"""Benchmark the I2I channels (ItemCF, Swing) and popularity: fit time and full-ranking test quality.

    python benchmarks/i2i.py --dataset amazon-beauty
    python benchmarks/i2i.py --dataset ml-1m --threads 1

Leave-one-out split as benchmarks/sequential.py; each channel is fitted on train (+ valid for the test
users' histories, as `evaluate_retriever` gives them), timed, and evaluated with full ranking and the
history masked. Appends one JSON line per channel to benchmarks/results/i2i.jsonl.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import torch

from recstack.config import to_dict
from recstack.eval.evaluator import evaluate_retriever
from recstack.registry import build

sys.path.insert(0, str(Path(__file__).resolve().parent))
from sequential import DATA_ROOT, RESULTS, SOURCES, append_jsonl, load_dataset

CHANNELS = ("popular", "itemcf", "swing")


def main(argv: list[str] | None = None) -> list[dict[str, Any]]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", choices=sorted(SOURCES), required=True)
    parser.add_argument("--data-dir", type=Path, default=None)
    parser.add_argument("--channels", default=",".join(CHANNELS))
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--no-write", action="store_true")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    dataset = load_dataset(args.dataset, args.data_dir or DATA_ROOT / args.dataset)
    records = []
    for name in args.channels.split(","):
        retriever = build("retriever", {"name": name})
        started = time.perf_counter()
        retriever.fit(dataset)
        fit_seconds = time.perf_counter() - started
        started = time.perf_counter()
        test = evaluate_retriever(retriever, dataset, "test", ks=(10, 20), batch_size=1024)
        record = {
            "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "machine": f"{platform.machine()}, torch {torch.__version__}, {torch.get_num_threads()} threads",
            "command": "python benchmarks/i2i.py " + " ".join(sys.argv[1:] if argv is None else argv),
            "dataset": args.dataset,
            "channel": name,
            "config": to_dict(retriever.config),
            "fit_seconds": round(fit_seconds, 2),
            "test_eval_seconds": round(time.perf_counter() - started, 2),
            "test": {k: round(test[k], 4) for k in ("recall@10", "ndcg@10", "recall@20", "ndcg@20")},
        }
        print(json.dumps({k: record[k] for k in ("channel", "fit_seconds", "test")}), flush=True)
        records.append(record)
    if not args.no_write:
        for record in records:
            append_jsonl(RESULTS.with_name("i2i.jsonl"), record)
    return records


if __name__ == "__main__":
    main()
