"""FLOPs per sample of OneMall: Query-Former vs full behaviour sequences, dense FFN vs sparse MoE.

    python benchmarks/generative_flops.py                                  # synthetic histories, T = 20, 200, 1000
    python benchmarks/generative_flops.py --dataset amazon-beauty --lengths 20,50
    python benchmarks/generative_flops.py --set layers=4 --set experts=8 --set top_k=2

Counts the forward FLOPs of `model.loss(batch)` (context encoding + teacher-forced decoder + code heads +
contrastive head) with torch.utils.flop_counter.FlopCounterMode, 2 FLOPs per multiply-add, matmuls and
attention only (`generative.compute.flops_per_sample`, which also counts CPU fused attention). "Without Query-Former"
is query_former=False: every decoder layer projects and attends over the full behaviour sequences instead
of behaviours x num_queries summaries. For each variant also: parameters (total / activated per token:
MoE counts its top-k experts) and the wall time of one training step (forward + backward) on the batch.

Synthetic batches: B users with full-length histories of T items, events drawn from {plain, click, buy}
(so the default behaviours give 3 sequences: all, click, buy). Dataset batches: real leave-one-out
training windows (GenerativeData) of --dataset; FLOPs do not depend on code values, so the codes are
random tuples of the usual shape (3 x 256 + a de-duplication level) unless --sid names saved ones.
Appends one JSON line to benchmarks/results/generative_flops.jsonl.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import platform
import sys
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import torch

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results" / "generative_flops.jsonl"
VARIANTS = {
    "qf+moe": {"query_former": True, "moe": True},
    "qf+dense": {"query_former": True, "moe": False},
    "full+moe": {"query_former": False, "moe": True},
    "full+dense": {"query_former": False, "moe": False},
}


def synthetic_batch(b: int, t: int, sizes: list[int], num_items: int, seed: int) -> dict[str, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    codes = torch.stack([torch.randint(0, s, (b, t + 1), generator=gen) for s in sizes], -1)
    return {
        "history_codes": codes[:, :-1],
        "history_items": torch.randint(1, num_items + 1, (b, t), generator=gen),
        "history_mask": torch.ones(b, t, dtype=torch.bool),
        "history_events": torch.randint(0, 3, (b, t), generator=gen),
        "users": torch.arange(b),
        "target_items": torch.randint(1, num_items + 1, (b,), generator=gen),
        "target_codes": codes[:, -1],
    }


def measure(config_spec: dict[str, Any], shape, event_names: list[str], batch: dict[str, torch.Tensor]) -> dict:
    from recstack.config import from_dict
    from recstack.retrieval.generative.behaviours import resolve_behaviours
    from recstack.retrieval.generative.compute import flops_per_sample
    from recstack.retrieval.generative.onemall import OneMall, OneMallConfig

    config = from_dict(OneMallConfig, config_spec, "onemall")
    torch.manual_seed(0)
    model = OneMall(config, shape, resolve_behaviours(config.behaviours, event_names))
    flops = flops_per_sample(model, batch)
    total = sum(p.numel() for p in model.parameters())
    moe_params = sum(p.numel() for m in model.modules() if hasattr(m, "activated_parameters") for p in m.parameters())
    active = (
        total
        - moe_params
        + sum(m.activated_parameters() for m in model.modules() if hasattr(m, "activated_parameters"))
    )
    model.train()
    model.loss(batch)["loss"].backward()  # warm-up
    started = time.perf_counter()
    for _ in range(2):
        model.zero_grad()
        model.loss(batch)["loss"].backward()
    step_ms = (time.perf_counter() - started) / 2 * 1000
    ctx, _ = model.context(batch)
    return {
        "gflops_per_sample": round(flops / 1e9, 5),
        "params": total,
        "activated_params": active,
        "context_tokens": int(ctx.shape[1]),
        "train_step_ms": round(step_ms, 1),
    }


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", default=None, help="e.g. amazon-beauty: real training windows (else synthetic)")
    parser.add_argument("--data-dir", type=Path, default=None)
    parser.add_argument("--sid", default=None, help="saved SemanticIds folder (default: random codes)")
    parser.add_argument("--lengths", default="20,200,1000", help="history lengths T (max_len for --dataset)")
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="OneMallConfig overrides")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--home", default=os.environ.get("RECSTACK_HOME", "/tmp/recstack_bench"))
    parser.add_argument("--no-write", action="store_true")
    args = parser.parse_args(argv)
    os.environ["RECSTACK_HOME"] = args.home
    torch.set_num_threads(args.threads)

    from recstack.retrieval.generative.base import ModelShape
    from recstack.semantic_ids.semantic_ids import SemanticIds

    spec = importlib.util.spec_from_file_location("bench_sequential", HERE / "sequential.py")
    helpers = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(helpers)
    overrides = helpers.parse_overrides(args.set)
    lengths = [int(v) for v in args.lengths.split(",")]
    rows = []
    if args.dataset:
        from recstack.retrieval.generative.behaviours import default_behaviours
        from recstack.retrieval.generative.data import GenerativeData
        from recstack.retrieval.generative.retriever import load_semantic_ids

        dataset = helpers.load_dataset(args.dataset, args.data_dir or Path("/work/shared/data") / args.dataset)
        overrides.setdefault("behaviours", default_behaviours(dataset, None))  # as OneMallRetriever.fit does
        sids = (
            load_semantic_ids(args.sid)
            if args.sid
            else SemanticIds.from_codes(
                torch.randint(0, 256, (dataset.num_items, 3), generator=torch.Generator().manual_seed(0)), [256] * 3
            )
        )
    for t in lengths:
        if args.dataset:
            data = GenerativeData(dataset, sids, t, "all")
            order = torch.randperm(data.num_samples, generator=torch.Generator().manual_seed(t))[: args.batch]
            batch, names = data.collate(order), data.event_names
            shape = ModelShape(sids.codebook_sizes, dataset.num_items, dataset.num_users, len(names) + 1)
            mean_len = float(batch["history_mask"].sum(1).float().mean())
        else:
            sizes, names = [256, 256, 256, 4], ["click", "buy"]
            batch, shape, mean_len = (
                synthetic_batch(args.batch, t, sizes, 10_000, t),
                ModelShape(sizes, 10_000, args.batch, 3),
                float(t),
            )
        for variant, flags in VARIANTS.items():
            row = {
                "T": t,
                "mean_history": round(mean_len, 1),
                "variant": variant,
                **measure({**overrides, **flags, "max_len": t}, shape, names, batch),
            }
            rows.append(row)
            print(json.dumps(row), flush=True)
    result = {
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "machine": f"{platform.machine()}, torch {torch.__version__}, {torch.get_num_threads()} threads, "
        f"load {os.getloadavg()[0]:.1f}",
        "command": "python benchmarks/generative_flops.py " + " ".join(sys.argv[1:] if argv is None else argv),
        "data": args.dataset or "synthetic",
        "overrides": overrides,
        "batch": args.batch,
        "rows": rows,
    }
    if not args.no_write:
        helpers.append_jsonl(RESULTS, result)
    return result


if __name__ == "__main__":
    main()
