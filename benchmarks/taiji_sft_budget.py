"""Taiji SFT-budget check: LoRA SFT with lr 1e-3 for 8 epochs on the ORFT-kept chains of an existing
benchmarks/taiji.py work folder (default runs/taiji-bench), then next-intent accuracy of that student.

    python benchmarks/taiji_sft_budget.py [--src runs/taiji-bench] [--dst runs/taiji-bench-sft8]

Copies the users, RUPR chains and ORFT output into --dst (so the source folder's stages are untouched) and
prints the SFT loss curve, seconds, and the accuracy summary as JSON.
"""

from __future__ import annotations

import argparse
import json
import shutil
import time
from pathlib import Path

from recstack.cli.run import ensure_dataset
from recstack.config import from_dict
from recstack.llm.taiji.config import TaijiConfig
from recstack.llm.taiji.pipeline import TaijiPipeline


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--src", type=Path, default=Path("runs/taiji-bench"))
    parser.add_argument("--dst", type=Path, default=Path("runs/taiji-bench-sft8"))
    parser.add_argument("--epochs", type=int, default=8)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--path", default="../shared/data/amazon-beauty")
    args = parser.parse_args()
    args.dst.mkdir(parents=True, exist_ok=True)
    for name in ("users.json", "reason", "filter"):
        if not (args.dst / name).exists():
            if (args.src / name).is_dir():
                shutil.copytree(args.src / name, args.dst / name)
            else:
                shutil.copy(args.src / name, args.dst / name)
    spec = json.loads((args.src / "config.json").read_text())
    spec["sft"].update({"epochs": args.epochs, "lr": args.lr})
    config = from_dict(TaijiConfig, spec, "taiji")
    pipe = TaijiPipeline(config, args.dst, ensure_dataset(config.dataset, args.path))
    started = time.perf_counter()
    summary = pipe.sft("kept")
    sft_seconds = time.perf_counter() - started
    print("sft losses", [round(h["loss"], 2) for h in summary["history"]][::4], flush=True)
    started = time.perf_counter()
    accuracy = pipe.evaluate("sft")
    eval_seconds = time.perf_counter() - started
    print(
        json.dumps({"sft_seconds": round(sft_seconds, 1), "eval_seconds": round(eval_seconds, 1), "accuracy": accuracy})
    )


if __name__ == "__main__":
    main()
