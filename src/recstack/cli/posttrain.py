"""`recstack posttrain RUN --channel NAME --objective grpo|dpo`: RL post-training of a run's generative
channel with the run's ranker as reward (OneMall, METHODS.md §2.16; retrieval/generative/posttrain/).

    recstack posttrain runs/beauty --channel onemall --objective grpo --steps 200
    recstack posttrain runs/beauty --channel onemall --objective dpo --reward-weights click=1,purchase=30

Loads RUN/channels/NAME (an onemall or tiger channel) and RUN/ranker, post-trains on the run's dataset
(the rows retrieval sees), measures the ranker reward of the top-10/100 generated items and test recall@10
on --eval-users test users before and after, and writes the tuned channel to RUN/channels/NAME-OBJECTIVE
(--name; the original channel is never overwritten). Checkpoints, log.jsonl and report.json go to
RUN/posttrain/<new name>/; a killed command resumes from its last checkpoint when run again.
"""

from __future__ import annotations

import json
import platform
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import typer

from recstack.cli.common import console, print_metrics
from recstack.cli.run import ensure_dataset, set_threads
from recstack.config import from_dict, load_yaml, to_dict
from recstack.errors import ConfigError, DataError


def parse_weights(text: str) -> dict[str, float]:
    """ "ctr=1,ctcvr=30,egpm=1" -> {"ctr": 1.0, "ctcvr": 30.0, "egpm": 1.0}."""
    out = {}
    for part in filter(None, (p.strip() for p in text.split(","))):
        task, sep, value = part.partition("=")
        try:
            out[task.strip()] = float(value)
        except ValueError:
            sep = ""
        if not sep or not task.strip():
            raise ConfigError(f"--reward-weights: expected task=weight pairs like ctr=1,ctcvr=30; got {part!r}")
    return out


def load_parts(run: Path, channel: str) -> tuple[Any, Any, Any]:
    """-> (RunConfig, the generative channel, the ranker); clear errors for what the run lacks."""
    from recstack.cascade import RunConfig
    from recstack.ranking.base import Ranker
    from recstack.retrieval.base import Retriever
    from recstack.retrieval.generative.retriever import GenerativeRetriever

    if not (run / "config.json").is_file():
        raise DataError(f"{run} is not a recstack run folder (no config.json); run `recstack run` first")
    config = from_dict(RunConfig, json.loads((run / "config.json").read_text()), "")
    if not (run / "ranker" / "config.json").is_file():
        raise DataError(
            f"{run}: this run has no ranker ({run / 'ranker'} is missing), and RL post-training uses the ranker's "
            "scores as its reward; post-train a run trained with a `ranker:`"
        )
    path = run / "channels" / channel
    if not (path / "config.json").is_file():
        known = sorted(p.name for p in (run / "channels").glob("*") if (p / "config.json").is_file())
        raise DataError(f"{run}: no channel {channel!r} ({path}); channels: {', '.join(known) or 'none'}")
    retriever = Retriever.load(path)
    if not isinstance(retriever, GenerativeRetriever):
        raise ConfigError(
            f"channel {channel!r} of {run} is a {retriever.name!r} retriever; RL post-training needs a generative "
            "one (onemall, tiger)"
        )
    return config, retriever, Ranker.load(run / "ranker")


def posttrain_command(
    run: Path = typer.Argument(
        ..., help="run folder written by `recstack run` (with a generative channel and a ranker)"
    ),
    channel: str = typer.Option(..., "--channel", help="the generative channel to post-train (onemall, tiger)"),
    objective: str | None = typer.Option(None, "--objective", help="grpo or dpo (default grpo)"),
    steps: int | None = typer.Option(None, "--steps", help="update steps (default 100)"),
    candidates: int | None = typer.Option(None, "--candidates", "-k", help="beam candidates per request (default 256)"),
    requests: int | None = typer.Option(None, "--requests-per-step", help="requests (groups) per step (default 16)"),
    lr: float | None = typer.Option(None, "--lr", help="learning rate (default 1e-4)"),
    kl_coef: float | None = typer.Option(None, "--kl-coef", help="GRPO KL coefficient (default 0.04)"),
    ref_sync: int | None = typer.Option(None, "--ref-sync-every", help="sync the reference every M steps (0 = never)"),
    weights: str | None = typer.Option(None, "--reward-weights", help="task=weight,... (default 1 per ranker task)"),
    config_file: Path | None = typer.Option(None, "--config", help="RLPostTrainConfig YAML (options override it)"),
    name: str | None = typer.Option(None, "--name", help="the tuned channel's alias (default CHANNEL-OBJECTIVE)"),
    eval_users: int = typer.Option(1000, "--eval-users", help="test users for the before/after measures (0: none)"),
    seed: int | None = typer.Option(None, "--seed", help="post-training seed (default 0)"),
    threads: int | None = typer.Option(None, "--threads", help="torch threads (default: one per core)"),
) -> None:
    """Post-train a generative channel with the run's ranker as reward; save it as a new channel."""
    from recstack.cascade import Cascade
    from recstack.retrieval.generative.posttrain import (
        RLPostTrainConfig,
        compare_metrics,
        post_train,
        posttrain_metrics,
        sample_users,
    )
    from recstack.retrieval.generative.posttrain.trainer import check_reward_weights
    from recstack.train.checkpoint import atomic_dir, write_json

    set_threads(threads)
    overrides: dict[str, Any] = {
        "objective": objective,
        "steps": steps,
        "candidates": candidates,
        "requests_per_step": requests,
        "lr": lr,
        "kl_coef": kl_coef,
        "ref_sync_every": ref_sync,
        "seed": seed,
        "reward_weights": parse_weights(weights) if weights else None,
    }
    data = {**(load_yaml(config_file) if config_file else {}), **{k: v for k, v in overrides.items() if v is not None}}
    config = from_dict(RLPostTrainConfig, data, "posttrain")
    run_config, retriever, ranker = load_parts(run, channel)
    check_reward_weights(config.reward_weights, ranker)  # before any work
    alias = name or f"{channel}-{config.objective}"
    target = run / "channels" / alias
    if target.exists():
        raise ConfigError(f"{target} already exists; pass --name to save the tuned channel under another alias")
    shell = Cascade.__new__(Cascade)  # only its config: the rows retrieval sees (Cascade.retrieval_view)
    shell.config = run_config
    dataset = shell.retrieval_view(
        ensure_dataset(run_config.dataset.name, run_config.dataset.path, run_config.dataset.prepare)
    )
    users = sample_users(dataset, "test", eval_users, config.seed) if eval_users > 0 else None

    def measure() -> dict[str, float]:
        return {} if users is None else posttrain_metrics(retriever, ranker, dataset, users, config.reward_weights)

    before = measure()
    work = run / "posttrain" / alias
    log = post_train(retriever, ranker, dataset, config, work)
    after = measure()
    with atomic_dir(target) as tmp:  # the tuned channel appears whole or not at all
        retriever.save(tmp)
        write_json(tmp / "posttrain.json", {"source_channel": channel, "config": to_dict(config), "steps": len(log)})
    report = {
        "run": str(run),
        "channel": channel,
        "saved_as": alias,
        "config": to_dict(config),
        "eval_users": 0 if users is None else int(users.numel()),
        "metrics": compare_metrics(before, after),
        "seconds_per_step": sum(e["seconds"] for e in log) / max(len(log), 1),
        "skipped_groups": sum(e["skipped_groups"] for e in log),
        "finished": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "machine": f"{platform.machine()} ({__import__('os').cpu_count()} cpus)",
    }
    write_json(work / "report.json", report, sort_keys=False)
    if before:
        print_metrics(
            f"{channel} -> {alias} ({config.objective}, {len(log)} steps)", {"before": before, "after": after}
        )
    console.print(f"tuned channel: {target}; log and report: {work}")
