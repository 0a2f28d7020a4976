"""`recstack sid fit | show`: semantic IDs for a prepared dataset, and a look at one item's codes.

    recstack sid fit --dataset amazon-beauty --encoder text --quantizer rq_kmeans --levels 3 --codebook 256
    recstack sid show --run runs/sid/amazon-beauty-text-rq_kmeans --item B004756YJA

A run folder holds sid/ (SemanticIds.save: codes + quantizer), embeddings.safetensors (the encoder
output the codes came from, [num_items + 1, D]), run.json (what was run, encoder stats, timings,
diagnostics) and diagnostics.md. It is written atomically: a failed fit leaves no folder behind.
"""

from __future__ import annotations

import dataclasses
import json
import time
from pathlib import Path
from typing import Any, cast

import polars as pl
import torch
import torch.nn.functional as F
import typer
from rich.table import Table
from safetensors.torch import load_file, save_file

from recstack.cli.common import console, friendly_errors
from recstack.config import load_yaml
from recstack.data.dataset import Dataset
from recstack.errors import ConfigError, DataError
from recstack.registry import build, lookup
from recstack.semantic_ids import SemanticIds
from recstack.semantic_ids.encoders import encode_items
from recstack.train.checkpoint import atomic_dir

app = typer.Typer(
    no_args_is_help=True,
    add_completion=False,
    help="Semantic IDs: encode items, quantize them into code tuples, inspect the codes.",
)


def quantizer_spec(name: str, options: dict[str, Any], levels: int | None, codebook: int | None) -> dict[str, Any]:
    """Registry spec for quantizer `name`; --levels / --codebook map onto its config's fields
    (levels, or kmeans_levels = levels - 1 for quantizers whose last level is FSQ)."""
    config = lookup("quantizer", name).config
    fields = {f.name for f in dataclasses.fields(config)} if dataclasses.is_dataclass(config) else set()
    spec = {**options, "name": name}
    if levels is not None:
        if "levels" in fields:
            spec["levels"] = levels
        elif "kmeans_levels" in fields:
            spec["kmeans_levels"] = levels - 1  # the last level is not a K-means level
        else:
            raise ConfigError(f"quantizer {name!r} has no levels setting; drop --levels")
    if codebook is not None:
        if "codebook_size" not in fields:
            raise ConfigError(f"quantizer {name!r} has no codebook_size setting; drop --codebook")
        spec["codebook_size"] = codebook
    return spec


def _section(options: dict[str, Any], key: str, name: str) -> dict[str, Any]:
    section = dict(options.get(key) or {})
    if section.pop("name", name) != name:
        raise ConfigError(f"config {key}.name is {options[key]['name']!r} but --{key} is {name!r}")
    return section


def diagnostics_rows(diag: dict[str, Any]) -> tuple[list[list[str]], list[tuple[str, str]]]:
    """(per-level rows, summary rows) of SemanticIds.diagnostics()."""
    levels = [
        [
            str(i + 1),
            str(lv["codebook_size"]),
            str(lv["used"]),
            f"{lv['utilisation']:.3f}",
            f"{lv['entropy_normalised']:.3f}",
        ]
        for i, lv in enumerate(diag.get("levels", []))
    ]
    summary: list[tuple[str, str]] = [
        (key, f"{diag[key]:.4f}" if isinstance(diag[key], float) else str(diag[key]))
        for key in (
            "items",
            "unique_tuples",
            "collision_rate",
            "max_items_per_tuple",
            "mean_items_per_tuple",
            "dedup_level_size",
            "reconstruction_rmse",
            "relative_rmse",
        )
        if key in diag
    ]
    return levels, summary


def diagnostics_markdown(title: str, diag: dict[str, Any], facts: dict[str, str]) -> str:
    levels, summary = diagnostics_rows(diag)
    lines = [
        f"# {title}",
        "",
        "| level | codebook | used | utilisation | entropy (normalised) |",
        "|---|---|---|---|---|",
        *["| " + " | ".join(row) + " |" for row in levels],
        "",
        "| what | value |",
        "|---|---|",
        *[f"| {k} | {v} |" for k, v in [*summary, *facts.items()]],
        "",
    ]
    return "\n".join(lines)


def _encoder_facts(stats: dict[str, Any], seconds: dict[str, float]) -> dict[str, str]:
    facts = {f"{k} seconds": f"{v:.1f}" for k, v in seconds.items()}
    facts["embedding cache"] = str(stats.get("cache", "-"))
    pairs = stats.get("pairs")
    if isinstance(pairs, dict):
        facts["Swing pairs (kept / above threshold / entries)"] = (
            f"{pairs['pairs']} / {pairs['above_threshold']} / {pairs['swing_entries']}"
        )
    align = stats.get("alignment")
    if isinstance(align, dict):
        facts["pair recall@10 before -> after alignment"] = (
            f"{align['pair_recall@10_before']:.3f} -> {align['pair_recall@10_after']:.3f}"
        )
    return facts


@app.command("fit")
@friendly_errors
def fit_command(
    dataset: str = typer.Option(..., "--dataset", help="prepared dataset name or folder"),
    encoder: str = typer.Option("text", "--encoder", help="item encoder: text, collab, fused, aligned"),
    quantizer: str = typer.Option("rq_kmeans", "--quantizer", help="rq_kmeans, res_kmeans_fsq, rq_vae, rq_gmm"),
    levels: int | None = typer.Option(None, "--levels", help="code levels (quantizer default when absent)"),
    codebook: int | None = typer.Option(None, "--codebook", help="codebook size per level"),
    config: Path | None = typer.Option(None, "--config", help="YAML with 'encoder:' / 'quantizer:' options"),
    out: Path | None = typer.Option(
        None, "--out", help="run folder (default runs/sid/<dataset>-<encoder>-<quantizer>)"
    ),
    cache: bool = typer.Option(True, "--cache/--no-cache", help="reuse embeddings cached under RECSTACK_HOME"),
) -> None:
    """Encode every item, fit the quantizer, write codes + diagnostics into a run folder."""
    import recstack.semantic_ids.encoders  # noqa: F401  (declares the item_encoder plugins)

    options = load_yaml(config) if config else {}
    item_encoder = build("item_encoder", {**_section(options, "encoder", encoder), "name": encoder})
    spec = quantizer_spec(quantizer, _section(options, "quantizer", quantizer), levels, codebook)
    model = build("quantizer", spec)
    data = Dataset.load(dataset)
    out = out or Path("runs") / "sid" / f"{data.name}-{encoder}-{quantizer}"
    seconds: dict[str, float] = {}
    started = time.perf_counter()
    with console.status(f"encoding {data.num_items:,} items with {encoder}"):
        embeddings = encode_items(item_encoder, data, cache)
    seconds["encode"] = time.perf_counter() - started
    started = time.perf_counter()
    with console.status(f"fitting {quantizer}"):
        model.fit(embeddings[1:])
        sids = SemanticIds.from_quantizer(model, embeddings)
    seconds["quantize"] = time.perf_counter() - started
    diag = sids.diagnostics(embeddings)
    facts = _encoder_facts(item_encoder.stats, seconds)
    title = f"semantic IDs: {data.name}, {encoder} encoder, {quantizer}"
    run = {
        "dataset": data.name,
        "dataset_ref": dataset,
        "encoder": {**_section(options, "encoder", encoder), "name": encoder},
        "encoder_model": item_encoder.model_id(),
        "quantizer": spec,
        "seconds": seconds,
        "encoder_stats": item_encoder.stats,
        "diagnostics": diag,
    }
    with atomic_dir(out) as tmp:
        sids.save(tmp / "sid")
        save_file({"embeddings": embeddings.contiguous()}, str(tmp / "embeddings.safetensors"))
        (tmp / "run.json").write_text(json.dumps(run, indent=1, default=str))
        (tmp / "diagnostics.md").write_text(diagnostics_markdown(title, diag, facts))
    print_diagnostics(title, diag, facts)
    console.print(f"codes of {data.num_items:,} items written to {out}")


def print_diagnostics(title: str, diag: dict[str, Any], facts: dict[str, str]) -> None:
    levels, summary = diagnostics_rows(diag)
    table = Table(title=title)
    for column in ("level", "codebook", "used", "utilisation", "entropy (norm.)"):
        table.add_column(column, justify="right")
    for row in levels:
        table.add_row(*row)
    console.print(table)
    facts_table = Table(show_header=False)
    facts_table.add_column("what")
    facts_table.add_column("value", justify="right")
    for key, value in [*summary, *facts.items()]:
        facts_table.add_row(key, value)
    console.print(facts_table)


def _resolve_item(data: Dataset, item: str, by: str) -> int:
    if by == "id":
        if not item.isdigit() or not 1 <= int(item) <= data.num_items:
            raise DataError(f"item id {item!r} is not in 1..{data.num_items}")
        return int(item)
    matches = (data.items["raw_id"] == item).arg_true()
    if matches.len() == 0:
        raise DataError(f"no item with raw id {item!r} in dataset {data.name!r} (use --by id for internal ids)")
    return int(data.items["item"][int(matches[0])])


@app.command("show")
@friendly_errors
def show_command(
    run: Path = typer.Option(..., "--run", help="run folder written by `recstack sid fit`"),
    item: str = typer.Option(..., "--item", help="the item's raw id (or internal id with --by id)"),
    by: str = typer.Option("raw", "--by", help="raw | id"),
    top: int = typer.Option(10, "--top", help="nearest items to list"),
) -> None:
    """An item's codes and its nearest items by shared code prefix (ties: embedding cosine), with titles."""
    if by not in ("raw", "id"):
        raise ConfigError(f"--by must be 'raw' or 'id', got {by!r}")
    if not (run / "run.json").is_file():
        raise DataError(f"{run} is not a `recstack sid fit` run folder (missing run.json)")
    meta = json.loads((run / "run.json").read_text())
    data = Dataset.load(meta.get("dataset_ref", meta["dataset"]))
    sids = SemanticIds.load(run / "sid")
    if sids.num_items != data.num_items:
        raise DataError(f"{run}: codes cover {sids.num_items} items, dataset {data.name!r} has {data.num_items}")
    target = _resolve_item(data, item, by)
    base = sids.base_codes  # [N + 1, L] without the de-duplication level
    shared = (base == base[target]).long().cumprod(dim=1).sum(dim=1)  # [N + 1] shared prefix length
    shared[0], shared[target] = -1, -1
    cosine = torch.zeros(shared.shape, dtype=torch.float32)
    if (run / "embeddings.safetensors").is_file():
        vectors = F.normalize(load_file(str(run / "embeddings.safetensors"))["embeddings"], dim=1)
        cosine = vectors @ vectors[target]
    order = torch.argsort(shared.double() * 4.0 + cosine.double(), descending=True)[: max(top, 0)]
    order = order[shared[order] > 0]
    label = "title" if "title" in data.items.columns else (data.text_fields or ["raw_id"])[0]
    titles = data.items[label].cast(pl.String).fill_null("").to_list()
    raw_ids = data.items["raw_id"].cast(pl.String).to_list()
    codes = sids.codes[target].tolist()
    console.print(f"item {target} (raw id {raw_ids[target - 1]}): codes {codes[:-1]} + dedup {codes[-1]}")
    console.print(f"  {label}: {titles[target - 1]}")
    under = [
        int(cast(torch.Tensor, sids.items_with_prefix(torch.tensor(codes[:depth]))).numel())  # 1-D prefix: a tensor
        for depth in range(1, len(codes))
    ]
    console.print("  items under each prefix: " + ", ".join(f"depth {d + 1}: {n}" for d, n in enumerate(under)))
    table = Table(title=f"nearest items by shared prefix ({run.name})")
    for column in ("item", "raw id", "codes", "shared", "cosine", label):
        table.add_column(column, justify="right" if column in ("item", "shared", "cosine") else "left")
    for other in order.tolist():
        table.add_row(
            str(other),
            str(raw_ids[other - 1]),
            str(sids.codes[other].tolist()),
            str(int(shared[other])),
            f"{float(cosine[other]):.3f}",
            titles[other - 1][:80],
        )
    console.print(table if len(order) else "  no other item shares even the first code")
