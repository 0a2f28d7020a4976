"""RecBole SASRec vs recstack SASRec on amazon-beauty, one after the other in one invocation, same machine.

    bash benchmarks/peers/setup_recbole.sh            # once: RecBole's own venv
    .venv/bin/python benchmarks/peers/side_by_side.py --recbole-epochs 3 --threads 1

Same data (the shared user_sequence.txt), same leave-one-out split, full ranking, same model size
(64-d, 2 layers, 2 heads, max_len 50, dropout 0.5, CE over all items, batch 256), same thread count.
Both libraries see every training target once per epoch (RecBole as one prefix sample per target,
recstack as every position of each user's window), so seconds per epoch compare like with like.
Quality: RecBole's best valid Recall/NDCG@10 after its epochs against recstack's valid curve, and the
recstack epoch (and seconds) at which it first reaches RecBole's best valid NDCG@10. Load average is
recorded before and after each side; compare only runs on a quiet machine.
Writes benchmarks/results/side_by_side_sasrec.json (atomically).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from datetime import datetime, timezone
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
RECBOLE_PY = HERE / ".venv-recbole" / "bin" / "python"


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--recbole-epochs", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "side_by_side_sasrec.json")
    args = parser.parse_args(argv)
    if not RECBOLE_PY.is_file():
        sys.exit(f"{RECBOLE_PY} is missing; run `bash benchmarks/peers/setup_recbole.sh` first")
    env = {**os.environ, "OMP_NUM_THREADS": str(args.threads)}
    with tempfile.TemporaryDirectory() as tmp:
        recbole_out = Path(tmp) / "recbole.json"
        load_before = os.getloadavg()[0]
        subprocess.run(
            [
                str(RECBOLE_PY),
                str(HERE / "recbole_sasrec.py"),
                "--dataset",
                "amazon-beauty",
                "--epochs",
                str(args.recbole_epochs),
                "--threads",
                str(args.threads),
                "--out",
                str(recbole_out),
            ],
            check=True,
            env=env,
        )
        recbole = json.loads(recbole_out.read_text().strip().splitlines()[-1])
        recbole["loadavg_1m_around"] = [load_before, os.getloadavg()[0]]

    sys.path.insert(0, str(ROOT / "benchmarks"))
    from sequential import main as run_sequential  # recstack's own benchmark, same preset as BENCHMARKS.md

    load_before = os.getloadavg()[0]
    ours = run_sequential(
        ["--dataset", "amazon-beauty", "--model", "sasrec", "--threads", str(args.threads), "--no-write"]
    )
    ours["loadavg_1m_around"] = [load_before, os.getloadavg()[0]]

    target = recbole["best_valid"]["ndcg@10"]
    reached, elapsed = None, 0.0
    for record in ours["valid_curve"]:  # seconds = train + valid pass of that epoch
        elapsed += record["seconds"]
        if record["ndcg@10"] >= target:
            reached = {"epoch": record["epoch"], "seconds_incl_valid": round(elapsed, 1)}
            break
    recbole_epoch = recbole["seconds_per_train_epoch"]["mean"]
    ours_epoch = ours["seconds"]["train_per_epoch"]
    result = {
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "command": "python benchmarks/peers/side_by_side.py " + " ".join(sys.argv[1:] if argv is None else argv),
        "threads": args.threads,
        "recbole": {
            "seconds_per_train_epoch": recbole_epoch,
            "epochs": recbole["epochs_run"],
            "best_valid": recbole["best_valid"],
            "loadavg_1m_around": recbole["loadavg_1m_around"],
        },
        "recstack": {
            "seconds_per_train_epoch": ours_epoch,
            "epochs": ours["epochs_run"],
            "valid_best": ours["valid_best"],
            "test": ours["test"],
            "loadavg_1m_around": ours["loadavg_1m_around"],
        },
        "speedup_per_epoch": round(recbole_epoch / ours_epoch, 1),
        "recstack_reaches_recbole_valid_ndcg10": reached,
        "recbole_seconds_to_its_best": round(
            recbole_epoch * recbole["epochs_run"] + sum(recbole["seconds_per_valid_eval"]["list"]), 1
        ),
    }
    print(json.dumps(result, indent=1))
    tmp = args.out.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(result, indent=1) + "\n")
    tmp.replace(args.out)
    return result


if __name__ == "__main__":
    main()
