"""`recstack llm reason | filter | sft | popo | features | intent`: Taiji's stages (METHODS.md §2.1) on the CLI.

    recstack llm reason   --work runs/taiji --dataset amazon-beauty --users 200 --teacher /models/qwq-32b
    recstack llm filter   --work runs/taiji            # ORFT: student PPL, keep <= median
    recstack llm sft      --work runs/taiji            # LoRA SFT on the kept chains (--all: on every chain)
    recstack llm popo     --work runs/taiji --weighting mgda       # or cv, or fixed --weights 0.5,0.5
    recstack llm features --work runs/taiji --stage popo-mgda      # -> runs/taiji/features/popo-mgda.parquet
    recstack llm intent   --work runs/taiji --stage popo-mgda      # next-intent accuracy on held-out users

Settings come from --config (a TaijiConfig YAML), else the work folder's config.json of an earlier
command, else the defaults; the options below override them. Every command resumes: finished users,
parts and stages are not redone. Feed the features to a ranker with `enhancer: {features: FILE}` in a
`recstack run` config.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

import typer

from recstack.cli.common import console, friendly_errors
from recstack.config import from_dict, load_yaml
from recstack.errors import ConfigError

WORK = typer.Option(Path("runs/taiji"), "--work", "-w", help="the pipeline's work folder (resumable)")
CONFIG = typer.Option(None, "--config", "-c", help="TaijiConfig YAML (default: the work folder's config.json)")
DATASET = typer.Option(None, "--dataset", help="prepared dataset name or folder")
USERS = typer.Option(None, "--users", help="training users drawn (seeded)")
TEACHER = typer.Option(
    None, "--teacher", help="teacher model: folder, hub id, 'tiny', or an http(s) URL of an OpenAI-compatible server"
)
STUDENT = typer.Option(
    None, "--student", help="student model: folder, hub id, 'tiny' (empty: offline SmolLM2-135M-Instruct)"
)


def model_spec(model: str) -> dict[str, Any]:
    """--teacher / --student value -> an LLMConfig mapping (a URL means the OpenAI-compatible backend)."""
    if model.startswith(("http://", "https://")):
        return {"backend": "openai", "url": model}
    return {"model": model}


def load_config(
    work: Path, config: Path | None, dataset: str | None, users: int | None, teacher: str | None, student: str | None
) -> Any:
    from recstack.llm.taiji.config import TaijiConfig

    if config is not None:
        data = load_yaml(config)
    elif (work / "config.json").is_file():
        data = json.loads((work / "config.json").read_text())
    else:
        data = {}
    cfg = from_dict(TaijiConfig, data, "taiji")
    overrides: dict[str, Any] = {}
    if dataset is not None:
        overrides["dataset"] = dataset
    if users is not None:
        overrides["users"] = users
    if teacher is not None:
        overrides["teacher"] = model_spec(teacher)
    if student is not None:
        overrides["student"] = model_spec(student)
    return dataclasses.replace(cfg, **overrides)


def pipeline(
    work: Path, config: Path | None, dataset: str | None, users: int | None, teacher: str | None, student: str | None
) -> Any:
    from recstack.llm.taiji.pipeline import TaijiPipeline

    return TaijiPipeline(load_config(work, config, dataset, users, teacher, student), work)


def show(title: str, summary: dict[str, Any]) -> None:
    brief = {k: v for k, v in summary.items() if k not in ("log", "history")}
    console.print(f"[bold]{title}[/] " + json.dumps(brief, default=str))


def reason_command(
    work: Path = WORK,
    config: Path | None = CONFIG,
    dataset: str | None = DATASET,
    users: int | None = USERS,
    teacher: str | None = TEACHER,
    student: str | None = STUDENT,
) -> None:
    """RUPR: the teacher writes chains of thought with the chosen next item as a hint (several per user)."""
    show("reason", pipeline(work, config, dataset, users, teacher, student).reason())


def filter_command(
    work: Path = WORK,
    config: Path | None = CONFIG,
    dataset: str | None = DATASET,
    users: int | None = USERS,
    teacher: str | None = TEACHER,
    student: str | None = STUDENT,
) -> None:
    """ORFT: the student's perplexity of the chosen item after prompt + chain; keep those at or below the median."""
    show("filter", pipeline(work, config, dataset, users, teacher, student).filter())


def sft_command(
    work: Path = WORK,
    config: Path | None = CONFIG,
    dataset: str | None = DATASET,
    users: int | None = USERS,
    teacher: str | None = TEACHER,
    student: str | None = STUDENT,
    all_samples: bool = typer.Option(False, "--all", help="train on every chain (no ORFT filter): stage sft-all"),
) -> None:
    """LoRA SFT of the student on the kept chains of thought."""
    show("sft", pipeline(work, config, dataset, users, teacher, student).sft("all" if all_samples else "kept"))


def popo_command(
    work: Path = WORK,
    config: Path | None = CONFIG,
    dataset: str | None = DATASET,
    users: int | None = USERS,
    teacher: str | None = TEACHER,
    student: str | None = STUDENT,
    weighting: str | None = typer.Option(None, help="fixed | mgda (POPO) | cv (POPO-light); default: the config's"),
    weights: str | None = typer.Option(None, help="fixed weights, comma-separated (semantic,id)"),
    base: str = typer.Option("sft", help="the stage POPO starts from: sft, sft-all or base"),
    steps: int | None = typer.Option(None, help="RL steps"),
) -> None:
    """POPO: GRPO with the semantic and ID rewards and the chosen weighting, from the SFT student."""
    pipe = pipeline(work, config, dataset, users, teacher, student)
    spec = dict(pipe.config.popo.weighting) if weighting is None else {"name": weighting}
    if weights is not None:
        if spec["name"] != "fixed":
            raise ConfigError("--weights goes with --weighting fixed")
        spec["weights"] = [float(w) for w in weights.split(",")]
    if steps is not None:
        pipe.config.popo = dataclasses.replace(pipe.config.popo, steps=steps)
    name = spec["name"] if weights is None else f"fixed-{weights.replace(',', '-')}"
    show(f"popo-{name}", pipe.popo(spec, base=base, name=name))


def features_command(
    work: Path = WORK,
    config: Path | None = CONFIG,
    dataset: str | None = DATASET,
    users: int | None = USERS,
    teacher: str | None = TEACHER,
    student: str | None = STUDENT,
    stage: str | None = typer.Option(None, help="the student after: sft, sft-all, popo-mgda, ... (default: base)"),
) -> None:
    """Student outputs -> MiniLM -> semantic IDs -> a features Parquet for `enhancer:` in a run config."""
    path = pipeline(work, config, dataset, users, teacher, student).features(stage)
    console.print(f"features: {path}  (use it with `enhancer: {{features: {path}}}` in a run config)")


def intent_command(
    work: Path = WORK,
    config: Path | None = CONFIG,
    dataset: str | None = DATASET,
    users: int | None = USERS,
    teacher: str | None = TEACHER,
    student: str | None = STUDENT,
    stage: str | None = typer.Option(None, help="the student after: sft, sft-all, popo-mgda, ... (default: base)"),
) -> None:
    """Next-intent accuracy (first level, leaf) of the student on the held-out users, with baselines."""
    pipe = pipeline(work, config, dataset, users, teacher, student)
    show(f"intent {stage or 'base'}", pipe.evaluate(stage))
    for name, values in pipe.baselines().items():
        show(f"baseline {name}", values)


def register_taiji(app: typer.Typer) -> None:
    """Add the Taiji commands to the `recstack llm` app."""
    for name, command in (
        ("reason", reason_command),
        ("filter", filter_command),
        ("sft", sft_command),
        ("popo", popo_command),
        ("features", features_command),
        ("intent", intent_command),
    ):
        app.command(name)(friendly_errors(command))
