"""Taiji on amazon-beauty: next-intent accuracy of the LLM at each stage, POPO reward/weight curves, cost.

    python benchmarks/taiji.py --users 200 --eval-users 100 --samples 4 --steps 50           # SmolLM2-135M (offline)
    python benchmarks/taiji.py --users 8 --eval-users 8 --samples 2 --steps 2 --tiny         # smoke test, ~1 min
    python benchmarks/taiji.py --student /models/R1-Distill-Qwen-7B --teacher http://127.0.0.1:8000/v1 ...

Runs the resumable pipeline (recstack.llm.taiji.pipeline) in --work (rerunning continues where it
stopped) on a seeded uniform draw of `--users` training users and `--eval-users` held-out users, and
reports next-intent accuracy (first-level and leaf category of the held-out test item) for:
majority class, category of the last item, the base student zero-shot, after ORFT-SFT (kept chains),
after SFT on all chains, and after POPO with fixed, mgda and cv weighting (each from the ORFT-SFT
student). Also: share of outputs in the answer format, ORFT keep statistics, seconds per stage and per
POPO step, generated tokens per second, and a plot of both rewards and the POPO weights over training.
One JSON line per run goes to benchmarks/results/taiji.jsonl; the plot to benchmarks/results/taiji_popo.png
(with --no-record both stay in --work). The first POPO stage embeds the whole catalogue with MiniLM once
(about 7 minutes for amazon-beauty's 12,101 items on 2 cores; cached under RECSTACK_HOME afterwards).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from recstack.config import from_dict
from recstack.llm.taiji.config import TaijiConfig
from recstack.llm.taiji.parts import PartStore
from recstack.llm.taiji.pipeline import TaijiPipeline
from sequential import RESULTS, append_jsonl

RESULTS_FILE = RESULTS.with_name("taiji.jsonl")
PLOT = RESULTS.with_name("taiji_popo.png")


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--dataset", default="amazon-beauty")
    p.add_argument(
        "--path", default="../shared/data/amazon-beauty", help="raw files, to prepare the dataset on first use"
    )
    p.add_argument("--work", default="runs/taiji-bench")
    p.add_argument("--users", type=int, default=200, help="training users (RUPR, ORFT, SFT, POPO)")
    p.add_argument("--eval-users", type=int, default=100, help="held-out users for next-intent accuracy")
    p.add_argument("--samples", type=int, default=4, help="RUPR chains per user")
    p.add_argument("--steps", type=int, default=50, help="POPO steps per weighting")
    p.add_argument("--group", type=int, default=4, help="POPO rollouts per user (G)")
    p.add_argument("--users-per-step", type=int, default=2)
    p.add_argument("--max-new-tokens", type=int, default=256)
    p.add_argument("--sft-epochs", type=int, default=2)
    p.add_argument("--weightings", default="fixed,mgda,cv")
    p.add_argument("--feature-users", type=int, default=0, help="users that get enhancer features (0 = skip)")
    p.add_argument("--feature-stage", default="sft", help="student that writes them: base | sft | popo-<weighting>")
    p.add_argument("--skip-popo", action="store_true", help="stop after the SFT stages (plus features)")
    p.add_argument("--teacher", default=None, help="teacher model (folder, hub id, URL); default: the student")
    p.add_argument("--student", default=None, help="student model; default: offline SmolLM2-135M-Instruct")
    p.add_argument("--tiny", action="store_true", help="tiny random Llama for both (pipeline smoke test)")
    p.add_argument("--device", default="auto")
    p.add_argument("--dtype", default="float32", help="float32 | bfloat16 (about 2x faster generation on AMX CPUs)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--no-record", action="store_true", help="do not append to benchmarks/results/taiji.jsonl")
    return p.parse_args()


def model_spec(model: str | None, device: str, dtype: str) -> dict[str, Any]:
    if model and model.startswith(("http://", "https://")):
        return {"backend": "openai", "url": model}
    return {"model": model, "device": device, "dtype": dtype}


def build_config(args: argparse.Namespace) -> TaijiConfig:
    student = {"model": "tiny", "device": "cpu"} if args.tiny else model_spec(args.student, args.device, args.dtype)
    teacher = student if (args.tiny or args.teacher is None) else model_spec(args.teacher, args.device, args.dtype)
    tokens = min(args.max_new_tokens, 32) if args.tiny else args.max_new_tokens
    spec = {
        "dataset": args.dataset,
        "users": args.users,
        "eval_users": args.eval_users,
        "seed": args.seed,
        "teacher": teacher,
        "student": student,
        "rupr": {"samples": args.samples, "max_new_tokens": tokens, "seed": args.seed},
        "sft": {"epochs": args.sft_epochs, "seed": args.seed},
        "popo": {
            "steps": args.steps,
            "group_size": args.group,
            "users_per_step": args.users_per_step,
            "max_new_tokens": tokens,
            "seed": args.seed,
        },
        "features": {"max_new_tokens": tokens},
        "feature_users": args.feature_users or None,
        "eval_max_new_tokens": tokens,
    }
    spec["prompts"] = {"time": False}  # amazon-beauty has the order of events, not dates
    if args.tiny:
        spec["prompts"] = {"time": False, "history_tokens": 200, "history_items": 5}
    return from_dict(TaijiConfig, spec, "taiji")


def ensure_dataset(name: str, path: str) -> Any:
    from recstack.cli.run import ensure_dataset as ensure

    return ensure(name, path)


def timed(stages: dict[str, float], name: str, func: Any, *args: Any, **kwargs: Any) -> Any:
    started = time.perf_counter()
    out = func(*args, **kwargs)
    stages[name] = round(time.perf_counter() - started, 1)
    print(f"[taiji] {name}: {stages[name]} s", flush=True)
    return out


def generated_tokens(pipe: TaijiPipeline, stage: str) -> int:
    """Tokens the student generated for the eval users at `stage` (counted with its tokenizer afterwards)."""
    records = PartStore(pipe.work / "eval" / stage).records()
    counter = pipe.load_model("student")
    return sum(counter.count_tokens(r["text"]) for r in records)


def plot(popo: dict[str, dict[str, Any]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(15, 4))
    for name, summary in popo.items():
        steps = [e["step"] for e in summary["log"]]
        axes[0].plot(steps, [e["reward_semantic"] for e in summary["log"]], label=name)
        axes[1].plot(steps, [e["reward_id"] for e in summary["log"]], label=name)
        axes[2].plot(steps, [e["weight_semantic"] for e in summary["log"]], label=f"{name}: w_semantic")
    for ax, title in zip(
        axes,
        (
            "semantic reward (mean over rollouts)",
            "ID reward (mean over rollouts)",
            "POPO weight of the semantic reward",
        ),
    ):
        ax.set_title(title)
        ax.set_xlabel("POPO step")
        ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    print(f"[taiji] plot: {path}")


def main() -> None:
    args = parse_args()
    config = build_config(args)
    dataset = ensure_dataset(args.dataset, args.path)
    pipe = TaijiPipeline(config, args.work, dataset)
    stages: dict[str, float] = {}
    started = time.perf_counter()
    accuracy: dict[str, Any] = dict(pipe.baselines())
    accuracy["base zero-shot"] = timed(stages, "eval base", pipe.evaluate, None)
    reason = timed(stages, "reason", pipe.reason)
    orft = timed(stages, "filter", pipe.filter)
    timed(stages, "sft (ORFT-kept)", pipe.sft, "kept")
    accuracy["ORFT-SFT"] = timed(stages, "eval sft", pipe.evaluate, "sft")
    timed(stages, "sft (all chains)", pipe.sft, "all")
    accuracy["SFT all CoTs"] = timed(stages, "eval sft-all", pipe.evaluate, "sft-all")
    popo: dict[str, dict[str, Any]] = {}
    for name in [] if args.skip_popo else args.weightings.split(","):
        popo[name] = timed(stages, f"popo {name}", pipe.popo, {"name": name}, "sft", name)
        accuracy[f"POPO {name}"] = timed(stages, f"eval popo-{name}", pipe.evaluate, f"popo-{name}")
    features = None
    if args.feature_users:
        stage = None if args.feature_stage == "base" else args.feature_stage
        features = str(timed(stages, f"features ({args.feature_stage})", pipe.features, stage))
    wall = round(time.perf_counter() - started, 1)
    tokens = generated_tokens(pipe, "base")
    # a resumed run reads finished stages from disk: no generation to time there
    tokens_per_second = tokens / stages["eval base"] if stages.get("eval base", 0.0) > 1.0 else None
    if popo:
        plot(popo, Path(args.work) / "taiji_popo.png" if args.no_record else PLOT)
    record = {
        "date": datetime.now(timezone.utc).isoformat(),
        "command": "python benchmarks/taiji.py " + " ".join(sys.argv[1:]),
        "machine": f"{platform.machine()} ({os.cpu_count()} cpus)",
        "dataset": args.dataset,
        "student": config.student,
        "teacher": config.teacher,
        "users": len(pipe.users()["train"]),
        "eval_users": len(pipe.contexts("eval")),
        "samples_per_user": args.samples,
        "popo_steps": args.steps,
        "group_size": args.group,
        "accuracy": accuracy,
        "reason": reason,
        "orft": orft,
        "popo": {
            n: {
                "seconds_per_step": sum(e["seconds"] for e in s["log"]) / max(1, len(s["log"])),
                "last": s["log"][-1] if s["log"] else None,
            }
            for n, s in popo.items()
        },
        "features": features,
        "feature_users": args.feature_users,
        "stage_seconds": stages,
        "wall_seconds": wall,
        "eval_generated_tokens": tokens,
        "generated_tokens_per_second": tokens_per_second,
        "torch_threads": __import__("torch").get_num_threads(),
    }
    print("\n| model | first-level acc | leaf acc | answer format ok |\n|---|---|---|---|")
    for name, values in accuracy.items():
        fmt = f"{values['format_ok']:.3f}" if "format_ok" in values else "-"
        print(f"| {name} | {values['first_level']:.3f} | {values['leaf']:.3f} | {fmt} |")
    print(f"\nwall {wall} s; stages {json.dumps(stages)}")
    if not args.no_record:
        append_jsonl(RESULTS_FILE, record)
        print(f"[taiji] recorded in {RESULTS_FILE}")


if __name__ == "__main__":
    main()
