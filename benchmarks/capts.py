"""CAPTS vs trigger-selection baselines: multi-channel Recall@K of future engagements (METHODS.md §2.5).

The I2I channels are fitted once; every selector then picks (and CAPTS routes) triggers among each test
user's last `num_candidates` items; each channel expands its triggers into K items (per-channel
Recall@K) and the merged list takes K/C per channel (merged Recall@K). Future engagements = the user's
first `--future` test interactions (ML-1M temporal split, the world's test clicks; amazon-beauty's
single leave-one-out test item). One JSON line per (dataset, selector) to --out.

    python benchmarks/capts.py --dataset ml-1m --ks 50,100,200,500,1000
    python benchmarks/capts.py --dataset amazon-beauty --channels itemcf,swing,sasrec_emb,content
    RECSTACK_HOME=/tmp/home python benchmarks/capts.py --dataset world   # `recstack data prepare world` first
"""

from __future__ import annotations

import argparse
import datetime
import json
import resource
import time
from pathlib import Path

import polars as pl
import torch

import recstack.retrieval.base  # noqa: F401  (declares the retriever plugins)
from recstack.cli.data import prepare_dataset
from recstack.data.dataset import Dataset
from recstack.data.jagged import Jagged
from recstack.errors import DataError
from recstack.registry import build
from recstack.retrieval.merge import channel_report
from recstack.retrieval.triggers.u2i2i import U2I2IRetriever

CHANNELS = {
    "itemcf": {"name": "itemcf"},
    "swing": {"name": "swing"},
    "sasrec_emb": {"name": "embedding_i2i", "encoder": {"name": "collab", "retriever": "sasrec"}},
    "content": {"name": "embedding_i2i", "encoder": {"name": "text"}},
}
SELECTORS = {
    "recent": {"name": "recent"},
    "tagtop": {"name": "tagtop"},
    "feedback": {"name": "feedback"},
    "random": {"name": "random"},
    "lic": {"name": "lic"},
    "capts": {"name": "capts"},
    "capts_no_routing": {"name": "capts", "route": False},
    "capts_exact": {"name": "capts", "routing": "exact"},
}
# where each dataset comes from, and how the benchmark splits it
DATASETS = {
    "ml-1m": {"source": "ml-1m", "name": "ml-1m", "prepare": None, "future": 10, "last": 10},
    "ml-100k": {"source": "ml-100k", "name": "ml-100k", "prepare": None, "future": 1},
    "amazon-beauty": {"source": "amazon-beauty", "name": "amazon-beauty", "prepare": None, "future": 1},
    "world": {"source": "world", "name": "world", "prepare": None, "future": 10},
}


def load(dataset: str, raw: str | None) -> Dataset:
    spec = DATASETS[dataset]
    try:
        loaded = Dataset.load(spec["name"])
    except DataError:
        loaded = prepare_dataset(spec["source"], Path(raw) if raw else None, spec["prepare"], output=spec["name"])
    return split_last(loaded, spec["last"]) if spec.get("last") else loaded


def split_last(dataset: Dataset, n: int) -> Dataset:
    """Per-user temporal split for order-only logs (ML-1M's file has no timestamps): each user's last n
    interactions are test (the future), the n before them valid, the rest train."""
    from recstack.data.dataset import SPLIT_CODES

    from_end = pl.int_range(pl.len()).reverse().over("user")
    split = (
        pl.when(from_end < n)
        .then(SPLIT_CODES["test"])
        .when(from_end < 2 * n)
        .then(SPLIT_CODES["valid"])
        .otherwise(SPLIT_CODES["train"])
    )
    frame = dataset.interactions.sort(["user", "timestamp"], maintain_order=True).with_columns(
        split=split.cast(dataset.interactions["split"].dtype)
    )
    meta = {**dataset.meta, "split": f"per-user last {n} test, {n} before valid"}
    return Dataset(f"{dataset.name}-last{n}", frame, dataset.items, dataset.users, meta)


def first(targets: Jagged, n: int) -> Jagged:
    """Each row's first n values (the next n interactions)."""
    position = torch.arange(targets.values.numel()) - targets.offsets[:-1][targets.row_ids()]
    return Jagged.from_lengths(targets.values[position < n], targets.lengths().clamp(max=n))


def print_tables(path: Path) -> None:
    """Markdown: per dataset, merged Recall@K of every selector (the newest record of each), CAPTS vs the
    best baseline at each K, and per-channel Recall@K of CAPTS vs the best baseline."""
    newest: dict[tuple[str, str], dict] = {}
    for line in path.read_text().splitlines():
        record = json.loads(line)
        newest[(record["dataset"], record["selector"])] = record
    for dataset in dict.fromkeys(d for d, _ in newest):
        records = {s: r for (d, s), r in newest.items() if d == dataset}
        ks = list(next(iter(records.values()))["recall"])
        print(f"\n{dataset} ({next(iter(records.values()))['users']} users) | " + " | ".join(f"@{k}" for k in ks))
        print("|---" * (len(ks) + 1) + "|")
        for selector, record in records.items():
            print(f"| {selector} | " + " | ".join(f"{record['recall'][k]['merged']:.4f}" for k in ks) + " |")
        baselines = [r for s, r in records.items() if not s.startswith("capts")]
        if "capts" in records and baselines:
            capts = records["capts"]
            gains = []
            for k in ks:
                best = max(r["recall"][k]["merged"] for r in baselines)
                gains.append(f"{100 * (capts['recall'][k]['merged'] / best - 1):+.1f}%")
            print("| CAPTS vs best baseline | " + " | ".join(gains) + " |")
            for channel in capts["channels"]:
                cells = []
                for k in ks:
                    best = max(r["recall"][k][channel] for r in baselines)
                    cells.append(
                        f"{capts['recall'][k][channel]:.4f} ({100 * (capts['recall'][k][channel] / best - 1):+.1f}%)"
                    )
                print(f"| {channel}: CAPTS (vs best baseline) | " + " | ".join(cells) + " |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", choices=list(DATASETS), default="ml-1m")
    parser.add_argument("--raw", default=None, help="raw files folder (default: the catalogue's)")
    parser.add_argument("--channels", default="itemcf,swing,sasrec_emb")
    parser.add_argument("--selectors", default=",".join(s for s in SELECTORS if s != "capts_exact"))
    parser.add_argument("--ks", default="50,100,200,500,1000")
    parser.add_argument("--triggers", type=int, default=10, help="triggers per channel")
    parser.add_argument("--candidates", type=int, default=20, help="candidate triggers per user")
    parser.add_argument("--expansion", type=int, default=20, help="per-trigger top-N a channel expands (VAM's N)")
    parser.add_argument("--unweighted", action="store_true", help="routed triggers weigh 1, not their CAPTS value")
    parser.add_argument("--window", type=int, default=None, help="VAM future window (default: --future)")
    parser.add_argument("--future", type=int, default=None, help="future engagements per test user")
    parser.add_argument("--users", type=int, default=None, help="evaluate a random subset of test users")
    parser.add_argument("--selector-options", default="{}", help="JSON merged into the CAPTS selectors' spec")
    parser.add_argument("--out", default="benchmarks/results/capts.jsonl")
    parser.add_argument("--table", action="store_true", help="print the markdown tables of --out and exit")
    args = parser.parse_args()
    if args.table:
        print_tables(Path(args.out))
        return
    torch.manual_seed(0)
    dataset = load(args.dataset, args.raw)
    view = dataset.positives(dataset.binary_labels()[0]) if dataset.is_impression_log() else dataset
    future = args.future or DATASETS[args.dataset]["future"]
    channels = {alias: CHANNELS[alias] for alias in args.channels.split(",")}
    ks = [int(k) for k in args.ks.split(",")]
    base_config = {
        "name": "u2i2i",
        "channels": channels,
        "selector": {"name": "recent"},
        "triggers_per_channel": args.triggers,
        "num_candidates": args.candidates,
        "future_window": args.window or future,
        "expansion": args.expansion,
        "weight_by_value": not args.unweighted,
    }
    started = time.perf_counter()
    base: U2I2IRetriever = build("retriever", base_config)
    for channel in base.channels.values():
        channel.fit(view)
    channel_seconds = time.perf_counter() - started
    users, targets = view.eval_users("test")
    targets = first(targets, future)
    if args.users and args.users < users.numel():
        pick = torch.randperm(users.numel(), generator=torch.Generator().manual_seed(0))[: args.users].sort().values
        users, targets = users[pick], targets.select(pick)
    features = ("timestamp", *[c for c in ("rating", "long_view", "like") if c in view.interactions.columns])
    batch = view.user_batch(users, before="test", features=features)
    print(f"{args.dataset}: {view.num_users} users, {view.num_items} items; channels fitted in {channel_seconds:.0f}s")
    for selector in args.selectors.split(","):
        spec = dict(SELECTORS[selector])
        if spec["name"] == "capts":
            spec.update(json.loads(args.selector_options))
        retriever: U2I2IRetriever = build("retriever", {**base_config, "selector": spec})
        retriever.channels = base.channels
        fit_started = time.perf_counter()
        retriever.fit_selector(view)
        fit_seconds = time.perf_counter() - fit_started
        retrieve_started = time.perf_counter()
        per_channel = retriever.retrieve_per_channel(batch, max(ks))
        retrieve_seconds = time.perf_counter() - retrieve_started
        recall = {}
        for k in ks:  # one merged list at a time: holding all of them took 19 GB on amazon-beauty
            retrieve_started = time.perf_counter()
            merged = retriever.retrieve(batch, k)
            retrieve_seconds += time.perf_counter() - retrieve_started
            recall[k] = channel_report(per_channel, merged, targets, [k])[f"recall@{k}"]
            del merged
        record = {
            "benchmark": "capts",
            "date": datetime.date.today().isoformat(),
            "dataset": args.dataset,
            "selector": selector,
            "selector_spec": spec,
            "channels": list(channels),
            "triggers_per_channel": args.triggers,
            "candidates": args.candidates,
            "expansion": args.expansion,
            "window": args.window or future,
            "weighted": not args.unweighted,
            "future": future,
            "users": int(users.numel()),
            "recall": recall,
            "fit_seconds": round(fit_seconds, 1),
            "retrieve_seconds": round(retrieve_seconds, 1),
            "vam": retriever.fit_report.get("vam"),
            "empty_expansions_skipped": retriever.stats["empty_expansions_skipped"],
            "peak_rss_gb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20, 2),
        }
        print(selector, json.dumps({k: round(v["merged"], 4) for k, v in recall.items()}), flush=True)
        with open(args.out, "a") as handle:
            handle.write(json.dumps(record) + "\n")


if __name__ == "__main__":
    main()
