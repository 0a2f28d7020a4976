"""Dataset loading counts: prepare each public dataset from its raw files and record what came out.

    python benchmarks/datasets.py                                   # every dataset below
    python benchmarks/datasets.py --datasets ml-100k,amazon-beauty

Each dataset goes through `recstack data prepare NAME --path ../shared/data/NAME` (the same function),
into RECSTACK_HOME; one JSON line per dataset is appended to benchmarks/results/datasets.jsonl with the
users, items, interactions, split sizes, what the filters removed and the seconds it took.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

from recstack.cli.data import prepare_dataset
from recstack.data.describe import describe

sys.path.insert(0, str(Path(__file__).resolve().parent))
from sequential import DATA_ROOT, RESULTS, append_jsonl

DATASETS = ["ml-100k", "ml-1m", "ml-latest-small", "amazon-beauty", "amazon-scientific", "amazon-industrial"]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--datasets", default=",".join(DATASETS))
    parser.add_argument("--data-dir", type=Path, default=DATA_ROOT)
    args = parser.parse_args(argv)
    for name in args.datasets.split(","):
        started = time.perf_counter()
        dataset = prepare_dataset(name, args.data_dir / name)
        seconds = time.perf_counter() - started
        stats = describe(dataset)
        record = {
            "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "machine": f"{platform.machine()}, python {platform.python_version()}",
            "command": f"recstack data prepare {name} --path ../shared/data/{name}",
            "benchmark": "python benchmarks/datasets.py " + " ".join(sys.argv[1:] if argv is None else argv),
            "dataset": name,
            "users": stats["users"],
            "items": stats["items"],
            "interactions": stats["interactions"],
            "split_method": stats["split_method"],
            "split": stats["split"],
            "removed": dataset.meta.get("report", []),
            "seconds": round(seconds, 2),
        }
        append_jsonl(RESULTS.with_name("datasets.jsonl"), record)
        print(json.dumps({k: record[k] for k in ("dataset", "users", "items", "interactions", "split", "seconds")}))


if __name__ == "__main__":
    main()
