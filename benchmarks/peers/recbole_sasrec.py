"""Peer benchmark: RecBole 1.2.1 SASRec on a P5-format user_sequence.txt (CPU).

Runs only inside the RecBole venv (``bash benchmarks/peers/setup_recbole.sh``); recstack never imports RecBole.

    benchmarks/peers/.venv-recbole/bin/python benchmarks/peers/recbole_sasrec.py --dataset amazon-beauty
    benchmarks/peers/.venv-recbole/bin/python benchmarks/peers/recbole_sasrec.py --dataset amazon-beauty --full --max-epochs 60

The sequences file ("<user> <item1> ... <itemN>", oldest first) is converted into a RecBole atomic
``<dataset>.inter`` file (user_id:token, item_id:token, timestamp:float = position in the sequence) in a
temporary folder, which is also the working directory for RecBole's log/, log_tensorboard/ and saved/ folders,
so nothing is written into the repository except the result JSON.

Protocol: leave-one-out (last item test, second-to-last valid, ordered by position), full ranking over all
items, CE loss over all items (no negative sampling), MAX_ITEM_LIST_LENGTH 50, hidden 64, 2 layers, 2 heads,
dropout 0.5/0.5, train batch 256, Adam lr 1e-3, no k-core filtering. RecBole trains on every prefix of each
training sequence (one target per sample), so an epoch has sum(len - 3) samples.

Default mode trains ``--epochs`` epochs (default 3) through ``Trainer.fit`` and times every training epoch
(``Trainer._train_epoch``, excluding evaluation) and every validation pass (``Trainer._valid_epoch``)
separately. ``--full`` trains up to ``--max-epochs`` with early stopping on valid NDCG@10 (stopping_step 10),
reloads the best checkpoint and reports test Recall/NDCG@5/10/20.

The result is printed and written (atomically) as one JSON line to
benchmarks/results/recbole_sasrec_<dataset>.json (``_full.json`` with ``--full``; ``--out`` overrides).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

import recbole
import torch
from recbole.config import Config
from recbole.data import create_dataset, data_preparation
from recbole.trainer import Trainer
from recbole.utils import get_model, init_logger, init_seed

DATA_ROOT = Path("/work/shared/data")
RESULTS = Path(__file__).resolve().parents[1] / "results"
EXPECTED = {  # (users, items, interactions) of the shared files; RecBole must keep all of them
    "amazon-beauty": (22363, 12101, 198502),
}


def write_inter(seq_file: Path, out_dir: Path, name: str) -> tuple[int, int, int]:
    """user_sequence.txt -> <out_dir>/<name>/<name>.inter; returns (users, items, interactions)."""
    target = out_dir / name
    target.mkdir(parents=True, exist_ok=True)
    users, items, n = 0, set(), 0
    with open(seq_file) as src, open(target / f"{name}.inter", "w") as dst:
        dst.write("user_id:token\titem_id:token\ttimestamp:float\n")
        for line in src:
            parts = line.split()
            if len(parts) < 2:
                continue
            user, seq = parts[0], parts[1:]
            users += 1
            items.update(seq)
            n += len(seq)
            dst.writelines(f"{user}\t{item}\t{pos}\n" for pos, item in enumerate(seq))
    return users, len(items), n


def build_config(args: argparse.Namespace, workdir: Path) -> dict:
    return {
        # environment
        "use_gpu": False,
        "seed": args.seed,
        "reproducibility": True,
        "worker": 0,
        "state": "INFO",
        "show_progress": False,
        "data_path": str(workdir / "data"),
        "checkpoint_dir": str(workdir / "saved"),
        "save_dataset": False,
        "save_dataloaders": False,
        "log_wandb": False,
        # data: keep everything (the files are already 5-core), order by position
        "field_separator": "\t",
        "USER_ID_FIELD": "user_id",
        "ITEM_ID_FIELD": "item_id",
        "TIME_FIELD": "timestamp",
        "load_col": {"inter": ["user_id", "item_id", "timestamp"]},
        "rm_dup_inter": None,
        "val_interval": None,
        "filter_inter_by_user_or_item": False,
        "user_inter_num_interval": "[0,inf)",
        "item_inter_num_interval": "[0,inf)",
        "MAX_ITEM_LIST_LENGTH": args.max_len,
        # model
        "hidden_size": 64,
        "inner_size": 256,
        "n_layers": 2,
        "n_heads": 2,
        "hidden_dropout_prob": args.dropout,
        "attn_dropout_prob": args.dropout,
        "hidden_act": "gelu",
        "loss_type": "CE",
        # training
        "train_neg_sample_args": None,
        "train_batch_size": 256,
        "learner": "adam",
        "learning_rate": 1e-3,
        "weight_decay": 0.0,
        "epochs": args.max_epochs if args.full else args.epochs,
        "eval_step": 1,
        "stopping_step": 10 if args.full else 10**9,
        # evaluation: leave-one-out, full ranking
        "eval_args": {"split": {"LS": "valid_and_test"}, "order": "TO", "mode": "full", "group_by": "user"},
        "metrics": ["Recall", "NDCG"],
        "topk": [5, 10, 20],
        "valid_metric": "NDCG@10",
        "valid_metric_bigger": True,
        "eval_batch_size": args.eval_batch_size,
    }


def timed(fn, sink: list[float]):
    def wrapper(*a, **kw):
        start = time.perf_counter()
        out = fn(*a, **kw)
        sink.append(time.perf_counter() - start)
        return out

    return wrapper


def write_atomic(path: Path, record: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(record) + "\n")
    os.replace(tmp, path)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", default="amazon-beauty", help="folder under --data-root with user_sequence.txt")
    parser.add_argument("--data-root", type=Path, default=DATA_ROOT)
    parser.add_argument("--epochs", type=int, default=3, help="timed training epochs (default mode)")
    parser.add_argument("--full", action="store_true", help="train to convergence (early stopping) and test")
    parser.add_argument("--max-epochs", type=int, default=60, help="epoch cap with --full")
    parser.add_argument("--max-len", type=int, default=50, help="MAX_ITEM_LIST_LENGTH")
    parser.add_argument("--dropout", type=float, default=0.5, help="hidden and attention dropout")
    parser.add_argument("--eval-batch-size", type=int, default=2048)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--seed", type=int, default=2020)
    parser.add_argument("--out", type=Path, default=None, help="result JSON (default benchmarks/results/...)")
    parser.add_argument(
        "--stock-anomaly-detection",
        action="store_true",
        help="leave on the autograd anomaly detection that importing RecBole's SINE switches on",
    )
    parser.add_argument("--keep-tmp", action="store_true", help="keep the temporary work folder")
    args = parser.parse_args()

    seq_file = args.data_root / args.dataset / "user_sequence.txt"
    if not seq_file.is_file():
        parser.error(f"{seq_file} not found")
    out = args.out or RESULTS / f"recbole_sasrec_{args.dataset}{'_full' if args.full else ''}.json"
    out = out.resolve()

    torch.set_num_threads(args.threads)
    workdir = Path(tempfile.mkdtemp(prefix=f"recbole_{args.dataset}_"))
    cwd = os.getcwd()
    started = time.perf_counter()
    load_start = os.getloadavg()
    try:
        os.chdir(workdir)  # RecBole writes log/, log_tensorboard/ and saved/ relative to the cwd
        t0 = time.perf_counter()
        users, items, n_inter = write_inter(seq_file, workdir / "data", args.dataset)
        print(
            f"[recbole_sasrec] wrote {workdir / 'data' / args.dataset}: "
            f"{users} users, {items} items, {n_inter} interactions"
        )
        if args.dataset in EXPECTED and (users, items, n_inter) != EXPECTED[args.dataset]:
            raise SystemExit(f"unexpected source stats {(users, items, n_inter)} != {EXPECTED[args.dataset]}")

        config = Config(model="SASRec", dataset=args.dataset, config_dict=build_config(args, workdir))
        init_seed(config["seed"], config["reproducibility"])
        init_logger(config)
        torch.set_num_threads(args.threads)  # after RecBole's setup, in case anything touched it

        dataset = create_dataset(config)
        print(dataset)
        rb_users, rb_items, rb_inter = dataset.user_num - 1, dataset.item_num - 1, dataset.inter_num  # minus [PAD]
        if (rb_users, rb_items, rb_inter) != (users, items, n_inter):
            raise SystemExit(f"RecBole dropped data: {(rb_users, rb_items, rb_inter)} != {(users, items, n_inter)}")
        train_data, valid_data, test_data = data_preparation(config, dataset)
        prep_seconds = time.perf_counter() - t0
        n_train = len(train_data.dataset)
        print(
            f"[recbole_sasrec] RecBole kept {rb_users} users, {rb_items} items, {rb_inter} interactions; "
            f"{n_train} training samples, {len(train_data)} batches/epoch; prep {prep_seconds:.1f}s"
        )

        init_seed(config["seed"] + config["local_rank"], config["reproducibility"])
        model = get_model(config["model"])(config, train_data._dataset).to(config["device"])
        # Importing any sequential model imports recbole/model/sequential_recommender/sine.py, which calls
        # torch.autograd.set_detect_anomaly(True) at import time: a debugging mode that checks every backward
        # output for NaN; it made a training batch 2-2.4x slower here. Turn it off unless
        # --stock-anomaly-detection asks to measure RecBole exactly as shipped.
        anomaly_on_by_recbole = torch.is_anomaly_enabled()
        if not args.stock_anomaly_detection:
            torch.autograd.set_detect_anomaly(False)
        trainer = Trainer(config, model)
        train_times: list[float] = []
        valid_times: list[float] = []
        trainer._train_epoch = timed(trainer._train_epoch, train_times)
        trainer._valid_epoch = timed(trainer._valid_epoch, valid_times)

        best_valid_score, best_valid = trainer.fit(train_data, valid_data, saved=args.full, show_progress=False)

        test = None
        test_seconds = None
        best_epoch = None
        if args.full:
            # RecBole's own evaluate(load_best_model=True) calls torch.load with torch>=2.6's weights_only=True
            # default, which refuses the pickled Config in the checkpoint; load it ourselves.
            checkpoint = torch.load(trainer.saved_model_file, map_location=config["device"], weights_only=False)
            model.load_state_dict(checkpoint["state_dict"])
            model.load_other_parameter(checkpoint.get("other_parameter"))
            best_epoch = int(checkpoint["epoch"]) + 1  # 1-based
            t1 = time.perf_counter()
            test = trainer.evaluate(test_data, load_best_model=False, show_progress=False)
            test_seconds = time.perf_counter() - t1
            test = {k: round(float(v), 4) for k, v in test.items()}

        mean = lambda xs: round(sum(xs) / len(xs), 2) if xs else None  # noqa: E731
        record = {
            "library": "recbole",
            "model": "SASRec",
            "dataset": args.dataset,
            "mode": "full" if args.full else "timing",
            "epochs_run": len(train_times),
            "best_epoch": best_epoch,
            "seconds_per_train_epoch": {
                "mean": mean(train_times),
                "mean_after_first": mean(train_times[1:]),
                "list": [round(t, 2) for t in train_times],
            },
            "seconds_per_valid_eval": {"mean": mean(valid_times), "list": [round(t, 2) for t in valid_times]},
            "seconds_test_eval": round(test_seconds, 2) if test_seconds is not None else None,
            "seconds_data_prep": round(prep_seconds, 2),
            "seconds_total": round(time.perf_counter() - started, 1),
            "best_valid": {k: round(float(v), 4) for k, v in (best_valid or {}).items()} or None,
            "best_valid_ndcg@10": round(float(best_valid_score), 4) if best_valid else None,
            "test": test,
            "data": {
                "users": rb_users,
                "items": rb_items,
                "interactions": rb_inter,
                "train_samples": n_train,
                "train_batches_per_epoch": len(train_data),
            },
            "settings": {
                "max_len": args.max_len,
                "hidden": 64,
                "layers": 2,
                "heads": 2,
                "dropout": args.dropout,
                "loss": "CE",
                "train_batch_size": 256,
                "lr": 1e-3,
                "eval_batch_size": args.eval_batch_size,
                "split": "leave-one-out",
                "ranking": "full",
                "stopping_step": 10 if args.full else None,
                "max_epochs": args.max_epochs if args.full else args.epochs,
                "seed": args.seed,
            },
            "versions": {
                "recbole": recbole.__version__,
                "torch": torch.__version__,
                "python": platform.python_version(),
            },
            "autograd_anomaly_detection": {
                "enabled_by_recbole_import": anomaly_on_by_recbole,
                "used": torch.is_anomaly_enabled(),
            },
            "threads": torch.get_num_threads(),
            "omp_env": {
                k: os.environ[k] for k in ("OMP_NUM_THREADS", "OMP_WAIT_POLICY", "MKL_NUM_THREADS") if k in os.environ
            },
            "loadavg_1m": {"start": round(load_start[0], 2), "end": round(os.getloadavg()[0], 2)},
            "device": "cpu",
            "host": f"{platform.machine()} {os.cpu_count()} cpus",
            "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        }
    finally:
        os.chdir(cwd)
        if args.keep_tmp:
            print(f"[recbole_sasrec] kept {workdir}")
        else:
            shutil.rmtree(workdir, ignore_errors=True)

    write_atomic(out, record)
    print(json.dumps(record))
    print(f"[recbole_sasrec] wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
