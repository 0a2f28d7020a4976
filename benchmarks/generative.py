"""Benchmark generative retrieval (TIGER, OneMall) on Amazon leave-one-out, full ranking.

    python benchmarks/generative.py --dataset amazon-beauty --model tiger --codes text
    python benchmarks/generative.py --dataset amazon-beauty --codes collab --set train.epochs=3 --threads 1
    python benchmarks/generative.py --dataset amazon-beauty --codes collab --save runs/gen/tiger-collab
    python benchmarks/generative.py --dataset amazon-beauty --load runs/gen/tiger-collab --unconstrained

Steps: prepare the dataset (leave-one-out); semantic IDs (--sid PATH, or fit --codes text | collab |
fused with --quantizer / --levels / --codebook and keep them under RECSTACK_HOME/generative_sids so a
rerun reuses them); train the model (early stopping on a seeded sample of VALID users, recall@10);
report TEST Recall/NDCG@5/10/20 by trie-constrained beam search (history masked), seconds per
epoch, decoding throughput (users/s, beam --beam, top-10) with and without the KV cache, the codes'
collision rate, and with --unconstrained the share of generated tuples that name no item. Appends
one JSON line to benchmarks/results/generative.jsonl. Model overrides: --set key=value (YAML
values, dotted keys for train.*), as in benchmarks/sequential.py.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import logging
import os
import platform
import sys
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import torch

HERE = Path(__file__).resolve().parent
DATA_ROOT = Path("/work/shared/data")
RESULTS = HERE / "results" / "generative.jsonl"

# Published numbers (ANCHORS.md §3.2, Amazon 2014 P5 splits, leave-one-out).
TARGETS = {"amazon-beauty": {"recall@5": 0.0454, "ndcg@5": 0.0321, "recall@10": 0.0648, "ndcg@10": 0.0384}}
STRETCH = {"amazon-beauty": {"recall@10": 0.0791, "ndcg@10": 0.0438}}  # LC-Rec (phonism/genrec)
ENCODERS: dict[str, dict[str, Any]] = {
    "text": {"name": "text"},
    "collab": {"name": "collab", "options": {"train": {"epochs": 10, "patience": 2}}},
    "fused": {
        "name": "fused",
        "parts": [{"name": "text"}, {"name": "collab", "options": {"train": {"epochs": 10, "patience": 2}}}],
    },
}


def _sequential_helpers():
    """load_dataset / parse_overrides from benchmarks/sequential.py (benchmarks/ is not a package)."""
    spec = importlib.util.spec_from_file_location("bench_sequential", HERE / "sequential.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def semantic_ids_for(args: argparse.Namespace, dataset) -> tuple[Path, dict[str, Any]]:
    """Saved SemanticIds folder (fitted once, then reused) and its diagnostics."""
    from recstack.paths import recstack_home as home
    from recstack.retrieval.generative.retriever import fit_semantic_ids, load_semantic_ids

    if args.sid:
        path = Path(args.sid)
        sids = load_semantic_ids(path)
    else:
        quantizer = {"name": args.quantizer, "levels": args.levels, "codebook_size": args.codebook}
        path = (
            home() / "generative_sids" / f"{dataset.name}-{args.codes}-{args.quantizer}-{args.levels}x{args.codebook}"
        )
        if args.codes != "text":
            path = path.with_name(path.name + f"-sasrec{args.collab_epochs}ep")
        if (path / "semantic_ids.json").is_file():
            sids = load_semantic_ids(path)
        else:
            started = time.perf_counter()
            encoder = json.loads(
                json.dumps(ENCODERS[args.codes]).replace('"epochs": 10', f'"epochs": {args.collab_epochs}')
            )
            sids = fit_semantic_ids(dataset, encoder, quantizer)
            sids.save(path)
            print(f"semantic IDs fitted in {time.perf_counter() - started:.0f}s -> {path}", flush=True)
    diag = sids.diagnostics()
    keep = {k: diag[k] for k in ("collision_rate", "dedup_level_size") if k in diag}
    return path, {**keep, "codebook_sizes": sids.codebook_sizes}


@torch.no_grad()
def decode_throughput(retriever, dataset, users: int, beam: int) -> dict[str, float]:
    """users/s of retrieve(k=10) on the first `users` test users, with and without the KV cache."""
    ids, _ = dataset.eval_users("test")
    batch = dataset.user_batch(ids[:users], before="test")
    out = {}
    saved = (retriever.config.use_cache, retriever.config.beam_size)
    retriever.config.beam_size = beam
    for cache in (True, False):
        retriever.config.use_cache = cache
        started = time.perf_counter()
        for start in range(0, len(batch), retriever.config.eval_batch_size):
            rows = torch.arange(start, min(start + retriever.config.eval_batch_size, len(batch)))
            retriever.retrieve(batch.select(rows), 10)
        out["users_per_s_cache" if cache else "users_per_s_no_cache"] = round(
            len(batch) / (time.perf_counter() - started), 1
        )
    retriever.config.use_cache, retriever.config.beam_size = saved
    return out


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", choices=["amazon-beauty", "amazon-scientific"], default="amazon-beauty")
    parser.add_argument("--model", choices=["tiger", "onemall"], default="tiger")
    parser.add_argument("--codes", choices=sorted(ENCODERS), default="text")
    parser.add_argument("--sid", default=None, help="saved SemanticIds (or `recstack sid fit` run) folder")
    parser.add_argument("--collab-epochs", type=int, default=10, help="SASRec epochs behind collab / fused codes")
    parser.add_argument("--quantizer", default="rq_kmeans")
    parser.add_argument("--levels", type=int, default=3)
    parser.add_argument("--codebook", type=int, default=256)
    parser.add_argument("--unconstrained", action="store_true", help="free decoding (ablation)")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    parser.add_argument("--beam", type=int, default=20, help="beam size of the throughput measurement")
    parser.add_argument("--decode-users", type=int, default=1024)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument(
        "--home",
        default=os.environ.get("RECSTACK_HOME", "/tmp/recstack_bench"),
        help="RECSTACK_HOME (embedding cache, fitted semantic IDs)",
    )
    parser.add_argument("--data-dir", type=Path, default=None)
    parser.add_argument("--save", default=None, help="save the trained retriever into this folder")
    parser.add_argument("--load", default=None, help="evaluate a saved retriever instead of training one")
    parser.add_argument("--no-write", action="store_true")
    args = parser.parse_args(argv)

    os.environ["RECSTACK_HOME"] = args.home
    torch.set_num_threads(args.threads)
    log = logging.getLogger("recstack.train")
    log.setLevel(logging.INFO)
    handler = logging.StreamHandler()
    handler.setFormatter(logging.Formatter("%(asctime)s %(message)s"))
    log.addHandler(handler)
    from recstack.config import to_dict
    from recstack.registry import build

    helpers = _sequential_helpers()
    started = time.perf_counter()
    dataset = helpers.load_dataset(args.dataset, args.data_dir or DATA_ROOT / args.dataset)
    print(
        f"{args.dataset}: {dataset.num_users} users, {dataset.num_items} items, "
        f"{dataset.interactions.height} interactions",
        flush=True,
    )
    if args.load:
        sid_path, sid_facts = Path(args.load) / "sid", {}
    else:
        sid_path, sid_facts = semantic_ids_for(args, dataset)
    sid_seconds = time.perf_counter() - started
    overrides = helpers.parse_overrides(args.set)
    spec = {"name": args.model, **overrides, "semantic_ids": str(sid_path)}
    if args.unconstrained:
        spec["constrained"] = False
    spec.setdefault("train", {}).setdefault("progress", False)
    if args.load:  # a trained retriever (e.g. saved by --save): evaluate / ablate without training
        from recstack.retrieval.base import Retriever

        retriever = Retriever.load(args.load)
        for key in ("constrained", "eval_users", "eval_batch_size", "beam_size", "use_cache"):
            if key in spec:
                setattr(retriever.config, key, spec[key])
        retriever.result = type("Loaded", (), {"history": [], "best_metrics": {}, "best_epoch": None})()
        retriever.seconds = {"train_per_epoch": 0.0, "eval": 0.0}
    else:
        retriever = build("retriever", spec)
        print(f"config: {json.dumps(to_dict(retriever.config))}", flush=True)
        retriever.fit(dataset)
        if args.save:
            retriever.save(args.save)
    for record in retriever.result.history:
        metrics = " ".join(f"{k}={v:.4f}" for k, v in record["metrics"].items())
        print(
            f"epoch {record['epoch'] + 1}: loss={record['train']['loss']:.4f} {metrics} ({record['seconds']:.1f}s)",
            flush=True,
        )
    t0 = time.perf_counter()
    test = retriever.evaluate(dataset, "test", ks=(5, 10, 20))
    test_seconds = time.perf_counter() - t0
    invalid = retriever.last_decode.get("invalid_share")
    speed = decode_throughput(retriever, dataset, args.decode_users, args.beam)
    keep = [f"{m}@{k}" for m in ("recall", "ndcg") for k in (5, 10, 20)]
    target = TARGETS.get(args.dataset, {})
    result = {
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "machine": f"{platform.processor() or platform.machine()}, torch {torch.__version__}, "
        f"{torch.get_num_threads()} threads, load {os.getloadavg()[0]:.1f}",
        "command": "python benchmarks/generative.py " + " ".join(sys.argv[1:] if argv is None else argv),
        "dataset": args.dataset,
        "model": retriever.name,
        "codes": "saved" if args.sid or args.load else args.codes,
        "semantic_ids": {"path": str(sid_path), **sid_facts},
        "config": to_dict(retriever.config),
        "test": {k: round(test[k], 4) for k in keep},
        "valid_best": {k: round(v, 4) for k, v in retriever.result.best_metrics.items()},
        "best_epoch": retriever.result.best_epoch,
        "epochs_run": len(retriever.result.history),
        "seconds": {
            "semantic_ids_and_prepare": round(sid_seconds, 1),
            "train_per_epoch": round(retriever.seconds["train_per_epoch"], 1),
            "valid_eval_total": round(retriever.seconds["eval"], 1),
            "test_eval": round(test_seconds, 1),
        },
        "decode": {"beam": args.beam, "k": 10, "users": args.decode_users, **speed},
        "target": target,
        "stretch": STRETCH.get(args.dataset, {}),
    }
    if args.unconstrained:
        result["invalid_share"] = invalid  # share of decoded tuples naming no item, over the test users
    result["meets_target"] = bool(target) and all(test[k] >= v for k, v in target.items())
    print("TEST " + " ".join(f"{k}={v:.4f}" for k, v in result["test"].items()))
    print(f"target {target} met: {result['meets_target']}; {result['seconds']}; decode {result['decode']}")
    if not args.no_write:
        helpers.append_jsonl(RESULTS, result)
    return result


if __name__ == "__main__":
    main()
