"""Benchmark: semantic-ID quantizers on real item embeddings (utilisation, collisions, RMSE, fit time).

For one dataset: prepare it (catalog.load_raw + prepare), embed its items with each encoder (through
the embedding cache under RECSTACK_HOME/embeddings, so reruns skip the encoding), fit every quantizer
on the item embeddings (rows 1..N, never the padding row) and record per quantizer: utilisation and
entropy per level, collision rate before de-duplication, exclusivity and max / mean items per tuple,
reconstruction RMSE (and relative to the RMS of the embeddings), fit and encode seconds, and that the
de-duplicated codes (SemanticIds.from_codes: one extra level) are unique for every item (asserted).

    .venv/bin/python benchmarks/semantic_ids.py --dataset amazon-industrial \\
        --path ../shared/data/amazon-industrial --encoders text \\
        --quantizers rq_kmeans,rq_kmeans_balanced,res_kmeans_fsq,rq_vae,rq_gmm --levels 3 --codebook 256

Quantizer names are registry names, plus "rq_kmeans_balanced" = rq_kmeans with OneRec's balanced
K-means (kmeans.balance = --balance, default "capacity": every cluster holds at most ceil(N/K) items).
For res_kmeans_fsq, --levels L means L−1 K-means levels + 1 FSQ level of (fsq_levels+1)^fsq_dims codes.
--rq-gmm-variants '[{"resp_topk": 0}, {"init": "kmeans"}]' adds rq_gmm fits with those config
overrides (reported as extra rows next to the default one).

--items all (default) encodes every item the raw item table lists, also items without interactions
(the tokenizer needs no interactions; amazon-industrial: 3,686 items in item.json, of which 3,541
have interactions); --items catalogue uses only the prepared catalogue (items with interactions).
With --items all, items get ids 1..N in sorted raw-id order (as prepare assigns them).

Reference codes (amazon-industrial): MiniOneRec's index.json codes, which the source keeps in
dataset.meta["extra"]["reference_semantic_ids"] ({raw item id: [c1, c2, c3]}), get the same
diagnostics. Their RMSE is our reconstruction of their codes in our embedding space: level-l
centroid of code k = mean residual (after levels < l) of the items whose level-l code is k, decoded as
the sum over levels (a residual codebook per level, as RQ codes have; not one centroid per prefix).
The same "code-mean refit" RMSE is reported for every quantizer's codes (`refit_rmse`) so the
reference row can be compared with ours on equal terms.

Output: benchmarks/results/semantic_ids_<dataset>.json (or --out) and Markdown tables on stdout.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

# The benchmark machine is shared: idle OpenMP threads that spin steal the cores they wait for.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
os.environ.setdefault("RECSTACK_HOME", "/tmp/recstack_bench")  # one embedding cache for every run

import numpy as np
import polars as pl
import torch

import recstack.semantic_ids.encoders  # noqa: F401  (declares the item_encoder plugins)
from recstack.cli.sid import quantizer_spec
from recstack.data import catalog
from recstack.data.dataset import Dataset
from recstack.data.prepare import prepare
from recstack.errors import DataError
from recstack.paths import recstack_home
from recstack.registry import build
from recstack.semantic_ids import SemanticIds, code_diagnostics
from recstack.semantic_ids.encoders import encode_items
from recstack.semantic_ids.encoders.cache import EmbeddingCache


# ---- data ------------------------------------------------------------------------------------------
def load_dataset(name: str, path: str | None, items: str) -> tuple[Dataset, dict[str, Any]]:
    """The prepared dataset; with items="all", its items table widened to every raw item."""
    raw = catalog.load_raw(name, path)
    listed = raw.items.height
    dataset = prepare(raw, catalog.dataset_info(name).prepare_config(), name=name)
    info = {
        "raw_items_listed": listed,
        "catalogue_items": dataset.num_items,
        "users": dataset.num_users,
        "interactions": dataset.interactions.height,
    }
    if items == "all" and listed > dataset.num_items:
        dataset = widen_items(dataset, raw.items)
    info["items_used"] = dataset.num_items
    info["items_mode"] = items
    return dataset, info


def widen_items(dataset: Dataset, raw_items: pl.DataFrame) -> Dataset:
    """Every raw item, ids 1..N in sorted raw-id order; interactions re-mapped to the new ids."""
    raw_ids = np.sort(raw_items["item"].to_numpy())
    item_map = pl.DataFrame({"raw_id": raw_ids, "item": np.arange(1, len(raw_ids) + 1, dtype=np.int32)})
    items = item_map.select("item", "raw_id").join(raw_items.rename({"item": "raw_id"}), on="raw_id", how="left")
    for column in dataset.text_fields:
        items = items.with_columns(pl.col(column).fill_null(""))
    old_to_new = dataset.items.select("item", "raw_id").join(item_map.rename({"item": "new"}), on="raw_id")
    if old_to_new.height != dataset.num_items:
        raise DataError("widen_items: some catalogue items are missing from the raw item table")
    lookup = np.zeros(dataset.num_items + 1, dtype=np.int32)
    lookup[old_to_new["item"].to_numpy()] = old_to_new["new"].to_numpy()
    interactions = dataset.interactions.with_columns(
        pl.Series("item", lookup[dataset.interactions["item"].to_numpy()], dtype=pl.Int32)
    )
    meta = dict(dataset.meta)
    meta["counts"] = {**meta.get("counts", {}), "items": items.height}
    return Dataset(name=dataset.name, interactions=interactions, items=items, users=dataset.users, meta=meta)


# ---- quantizers --------------------------------------------------------------------------------------
def quantizer_specs(
    names: list[str], levels: int, codebook: int, balance: str, seed: int, gmm_variants: list[dict[str, Any]]
) -> list[tuple[str, dict[str, Any]]]:
    """(row label, registry spec) per quantizer to fit."""
    out = []
    for name in names:
        if name == "rq_kmeans_balanced":
            spec = quantizer_spec("rq_kmeans", {"kmeans": {"balance": balance}, "seed": seed}, levels, codebook)
        else:
            spec = quantizer_spec(name, {"seed": seed}, levels, codebook)
        out.append((name, spec))
        if name == "rq_gmm":
            for variant in gmm_variants:
                label = "rq_gmm[" + ",".join(f"{k}={json.dumps(v)}" for k, v in variant.items()) + "]"
                out.append((label, {**spec, **variant}))
    return out


def code_mean_decoder(x: torch.Tensor, codes: torch.Tensor):
    """decode(codes) for codes [N, L] of rows x [N, D] without a quantizer: level-l centroid of a code =
    mean residual (after levels < l) of the rows with that level-l code. Codes are compacted per level,
    so a huge implicit codebook (FSQ) costs only the codes that occur."""
    residual = x.double().clone()
    tables = []
    for level in range(codes.shape[1]):
        values, inverse = torch.unique(codes[:, level], return_inverse=True)
        counts = torch.bincount(inverse, minlength=values.numel()).double()[:, None]
        means = torch.zeros(values.numel(), x.shape[1], dtype=torch.float64).index_add_(0, inverse, residual)
        means /= counts
        residual -= means[inverse]
        tables.append((values, means))

    def decode(chunk: torch.Tensor) -> torch.Tensor:
        out = torch.zeros(chunk.shape[0], x.shape[1], dtype=torch.float64)
        for level, (values, means) in enumerate(tables):
            pos = torch.searchsorted(values, chunk[:, level].contiguous()).clamp_max(values.numel() - 1)
            if not bool((values[pos] == chunk[:, level]).all()):
                raise DataError("code_mean_decoder: a code that no fitted row has")
            out += means[pos]
        return out.float()

    return decode


def summarise(codes: torch.Tensor, sizes: list[int], x: torch.Tensor, decode=None) -> dict[str, Any]:
    """Diagnostics of codes [N, L] (+ RMSE with `decode`), the code-mean refit RMSE, and the
    de-duplicated SemanticIds check (every item's full tuple unique; the trie builds)."""
    diag = code_diagnostics(codes, sizes, x, decode) if decode is not None else code_diagnostics(codes, sizes)
    refit = code_diagnostics(codes, sizes, x, code_mean_decoder(x, codes))
    diag["refit_rmse"] = refit["reconstruction_rmse"]
    diag["refit_relative_rmse"] = refit["relative_rmse"]
    sids = SemanticIds.from_codes(codes, sizes)
    full = sids.codes[1:]
    unique = int(torch.unique(full, dim=0).shape[0])
    assert unique == codes.shape[0], f"de-duplicated codes are not unique: {unique} tuples for {codes.shape[0]} items"
    trie = sids.prefix_trie  # raises if tuples are not unique
    items = torch.arange(1, codes.shape[0] + 1)
    assert bool((trie.item_of(full) == items).all()), "prefix trie does not map every tuple back to its item"
    diag["dedup_level_size"] = sids.codebook_sizes[-1]
    diag["unique_after_dedup"] = True
    diag["used_codes"] = [lv["used"] for lv in diag.pop("levels")]
    return diag


def fit_one(label: str, spec: dict[str, Any], x: torch.Tensor) -> dict[str, Any]:
    model = build("quantizer", spec)
    started = time.perf_counter()
    model.fit(x)
    fit_seconds = time.perf_counter() - started
    started = time.perf_counter()
    codes = model.encode(x)
    encode_seconds = time.perf_counter() - started
    diag = summarise(codes, model.codebook_sizes, x, model.decode)
    extra: dict[str, Any] = {}
    if spec["name"] == "rq_gmm":
        extra["em_iterations"] = [len(h) for h in model.history]
    if spec["name"] == "rq_vae":
        extra["final_loss"] = model.history[-1] if model.history else None
    return {
        "label": label,
        "spec": spec,
        "codebook_sizes": model.codebook_sizes,
        "fit_seconds": fit_seconds,
        "encode_seconds": encode_seconds,
        **extra,
        **diag,
    }


def reference_row(dataset: Dataset, x: torch.Tensor, codebook: int) -> dict[str, Any] | None:
    reference = (dataset.meta.get("extra") or {}).get("reference_semantic_ids")
    if not reference:
        return None
    raw_ids = dataset.items["raw_id"].cast(pl.String).to_list()
    missing = [r for r in raw_ids if r not in reference]
    present = [i for i, r in enumerate(raw_ids) if r in reference]
    codes = torch.tensor([reference[raw_ids[i]] for i in present], dtype=torch.long)
    sizes = [max(codebook, int(codes[:, level].max()) + 1) for level in range(codes.shape[1])]
    diag = summarise(codes, sizes, x[present])
    diag["reconstruction_rmse"], diag["relative_rmse"] = diag["refit_rmse"], diag["refit_relative_rmse"]
    return {
        "label": "reference (MiniOneRec index.json)",
        "codebook_sizes": sizes,
        "fit_seconds": None,
        "items_with_reference_codes": len(present),
        "items_without_reference_codes": len(missing),
        "rmse_note": "code-mean refit of their codes in our embedding space",
        **diag,
    }


# ---- report ------------------------------------------------------------------------------------------
def fmt_util(utilisation: float, used: int, size: int) -> str:
    """Utilisation; for a huge implicit codebook (FSQ) the used count says more than the share."""
    return f"{utilisation:.3f}" if size <= 65536 else f"{used:,} of {size:,} ({utilisation:.4f})"


def fmt_row(row: dict[str, Any]) -> str:
    util = " | ".join(
        fmt_util(u, n, s) for u, n, s in zip(row["utilisation"], row["used_codes"], row["codebook_sizes"])
    )
    if len(row["utilisation"]) < 3:
        util += " |" * (3 - len(row["utilisation"]))
    entropy = "/".join(f"{e:.2f}" for e in row["entropy_normalised"])
    # a codebook larger than the item count gives (nearly) every item its own code: a refit is trivial
    refit = "n/a ²" if max(row["codebook_sizes"]) > row["items"] else f"{row['refit_rmse']:.4f}"
    fit = "—" if row.get("fit_seconds") is None else f"{row['fit_seconds']:.1f}"
    label = row["label"] + (" ¹" if row["label"].startswith("reference") else "")
    return (
        f"| {label} | {util} | {row['collision_rate']:.4f} | {row['max_items_per_tuple']} | "
        f"{entropy} | {row['reconstruction_rmse']:.4f} | {row['relative_rmse']:.3f} | "
        f"{refit} | {fit} | {'yes' if row['unique_after_dedup'] else 'NO'} |"
    )


def markdown(result: dict[str, Any]) -> str:
    lines = []
    for encoder, block in result["encoders"].items():
        lines += [
            f"#### {result['dataset']}, {encoder} embeddings ({block['items']:,} items × {block['dim']} d)",
            "",
            "| quantizer | util L1 | util L2 | util L3 | collision rate | max items/tuple | entropy L1/L2/L3 "
            "(norm.) | RMSE | rel. RMSE | refit RMSE | fit s | unique after de-dup |",
            "|---|---|---|---|---|---|---|---|---|---|---|---|",
        ]
        lines += [fmt_row(row) for row in block["rows"]]
        lines.append("")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", required=True)
    parser.add_argument("--path", default=None, help="folder with the raw files (default: catalogue fetch)")
    parser.add_argument("--encoders", default="text", help="comma list of item encoders: text, collab, fused")
    parser.add_argument("--quantizers", default="rq_kmeans,rq_kmeans_balanced,res_kmeans_fsq,rq_vae,rq_gmm")
    parser.add_argument("--levels", type=int, default=3)
    parser.add_argument("--codebook", type=int, default=256)
    parser.add_argument("--items", choices=["all", "catalogue"], default="all")
    parser.add_argument("--balance", choices=["capacity", "sinkhorn"], default="capacity")
    parser.add_argument("--rq-gmm-variants", default="[]", help="JSON list of rq_gmm config overrides")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", default=None)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    started_at = datetime.now(timezone.utc).isoformat(timespec="seconds")
    load = os.getloadavg()

    dataset, data_info = load_dataset(args.dataset, args.path, args.items)
    print(f"{args.dataset}: {data_info}", flush=True)
    specs = quantizer_specs(
        args.quantizers.split(","),
        args.levels,
        args.codebook,
        args.balance,
        args.seed,
        json.loads(args.rq_gmm_variants),
    )
    cache = EmbeddingCache()
    result: dict[str, Any] = {
        "benchmark": "semantic_ids",
        "dataset": args.dataset,
        "date": started_at,
        "args": vars(args),
        "machine": {
            "platform": platform.platform(),
            "cpus": os.cpu_count(),
            "torch": torch.__version__,
            "threads": args.threads,
            "load_average_at_start": [round(v, 2) for v in load],
        },
        "recstack_home": str(recstack_home()),
        "data": data_info,
        "encoders": {},
    }
    for encoder_name in args.encoders.split(","):
        encoder = build("item_encoder", {"name": encoder_name})
        started = time.perf_counter()
        embeddings = encode_items(encoder, dataset, cache)
        encode_seconds = time.perf_counter() - started
        x = embeddings[1:].contiguous()  # items 1..N, not the padding row
        print(
            f"[{encoder_name}] {tuple(x.shape)} in {encode_seconds:.1f}s (cache {encoder.stats.get('cache')})",
            flush=True,
        )
        block: dict[str, Any] = {
            "items": x.shape[0],
            "dim": x.shape[1],
            "encode_seconds": encode_seconds,
            "encoder_model": encoder.model_id(),
            "encoder_stats": encoder.stats,
            "rows": [],
        }
        for label, spec in specs:
            row = fit_one(label, spec, x)
            block["rows"].append(row)
            print(
                f"  {label}: util {[round(u, 3) for u in row['utilisation']]} coll {row['collision_rate']:.4f} "
                f"max {row['max_items_per_tuple']} rmse {row['reconstruction_rmse']:.4f} "
                f"refit {row['refit_rmse']:.4f} fit {row['fit_seconds']:.1f}s",
                flush=True,
            )
        if encoder_name == "text":
            reference = reference_row(dataset, x, args.codebook)
            if reference is not None:
                block["rows"].append(reference)
        result["encoders"][encoder_name] = block
    result["load_average_at_end"] = [round(v, 2) for v in os.getloadavg()]
    result["markdown"] = markdown(result)
    out = Path(args.out) if args.out else Path(__file__).parent / "results" / f"semantic_ids_{args.dataset}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=1, default=str) + "\n")
    print(result["markdown"])
    print(f"written to {out}")


if __name__ == "__main__":
    main()
