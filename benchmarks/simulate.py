"""Record online evaluations: append the results of `recstack simulate` runs to results/simulate.jsonl.

    recstack simulate runs/world-cascade --users 2000 --sessions 5 --baseline random,logged,oracle
    python benchmarks/simulate.py runs/world-cascade/simulate --note "load 6 on 2 cores"

One line per results folder: the command, date, machine, world, simulation config, every arm's mean
per page with its interval, the paired differences and the share of the random -> oracle gap closed.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from sequential import append_jsonl

METRICS = (
    "clicks",
    "likes",
    "long_views",
    "purchases",
    "expected_clicks",
    "expected_purchases",
    "page_value",
    "topics",
)


def record(folder: Path, note: str | None = None) -> dict[str, Any]:
    """The JSONL record of one `recstack simulate` output folder."""
    results = json.loads((folder / "results.json").read_text())

    def rounded(values: dict[str, Any], keys: tuple[str, ...]) -> dict[str, Any]:
        return {k: round(v, 4) if isinstance(v, float) else v for k, v in values.items() if k in keys}

    return {
        "benchmark": "simulate",
        "date": results["date"],
        "machine": results["machine"],
        "command": results["command"],
        "note": note,
        "world": results["world"],
        "config": results["config"],
        "seconds": results["seconds"],
        "policy_seconds": results["policy seconds"],
        "arms": {
            arm: {m: rounded(v[m], ("mean", "low", "high")) for m in METRICS} for arm, v in results["arms"].items()
        },
        "comparisons": {
            name: {
                m: rounded(c["metrics"][m], ("difference", "low", "high", "relative", "p_value", "unpaired_half_width"))
                for m in METRICS
            }
            for name, c in results["comparisons"].items()
        },
        "coverage": {arm: round(v, 4) for arm, v in results["coverage"].items()},
        "oracle_gap_closed": {arm: round(v, 4) for arm, v in (results.get("oracle_gap_closed") or {}).items()},
        "interval_method": results["interval_method"],
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("folders", nargs="+", type=Path, help="output folders of `recstack simulate`")
    parser.add_argument("--note", default=None, help="free text stored with each record (e.g. the machine load)")
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "simulate.jsonl")
    args = parser.parse_args(argv)
    for folder in args.folders:
        row = record(folder, args.note)
        append_jsonl(args.out, row)
        print(f"{folder}: appended to {args.out}")


if __name__ == "__main__":
    main()
