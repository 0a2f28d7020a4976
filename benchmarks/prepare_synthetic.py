"""Benchmark: prepare a synthetic log of N impressions (default 1M): wall time and peak memory.

    .venv/bin/python benchmarks/prepare_synthetic.py --interactions 1000000

Generation streams to Parquet in chunks; the timed part reads that file through the generic
source path (Parquet -> RawTables) and runs `prepare` (dedup, k-core 5/5, remap, sort, leave-one-out
split, save). Peak memory is the process's max RSS (it includes Python, torch and polars imports).
"""

from __future__ import annotations

import argparse
import json
import resource
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

import polars as pl


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--interactions", type=int, default=1_000_000)
    parser.add_argument("--users", type=int, default=100_000)
    parser.add_argument("--items", type=int, default=50_000)
    args = parser.parse_args()

    from recstack.data.prepare import PrepareConfig, prepare
    from recstack.data.tables import RawTables
    from recstack.world import World, WorldConfig

    world = World(WorldConfig(num_users=args.users, num_items=args.items, num_interactions=args.interactions))
    with tempfile.TemporaryDirectory() as tmp:
        log = Path(tmp) / "log.parquet"
        started = time.perf_counter()
        world.write_logs_parquet(log, args.interactions)
        generate_seconds = time.perf_counter() - started
        rss_after_generate = peak_rss_mb()

        started = time.perf_counter()
        raw = RawTables(
            "world-1m",
            pl.read_parquet(log),
            items=world.items_table(),
            users=world.users_table(),
            labels=["click", "like", "long_view", "purchase"],
            text_fields=["title", "description"],
            origin=str(log),
        )
        dataset = prepare(raw, PrepareConfig(min_user_interactions=5, min_item_interactions=5))
        path = dataset.save(Path(tmp) / "prepared")
        prepare_seconds = time.perf_counter() - started
    result = {
        "benchmark": "prepare_synthetic",
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "rows_in": raw.interactions.height,
        "rows_out": dataset.interactions.height,
        "users": dataset.num_users,
        "items": dataset.num_items,
        "generate_seconds": round(generate_seconds, 2),
        "prepare_seconds": round(prepare_seconds, 2),
        "peak_rss_mb_after_generate": round(rss_after_generate),
        "peak_rss_mb": round(peak_rss_mb()),
        "report": dataset.meta["report"],
        "command": " ".join(sys.argv),
    }
    print(json.dumps(result, indent=2))
    out = Path(__file__).parent / "results" / "prepare_synthetic.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    del path


if __name__ == "__main__":
    main()
