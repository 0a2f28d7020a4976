"""Two CPU processes under torchrun (gloo): same script as a single-process run."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

SCRIPT = Path(__file__).with_name("ddp_script.py")


def torchrun() -> list[str]:
    exe = Path(sys.executable).with_name("torchrun")
    if exe.exists():
        return [str(exe)]
    if shutil.which("torchrun"):
        return ["torchrun"]
    return [sys.executable, "-m", "torch.distributed.run"]


@pytest.mark.skipif(not torch.distributed.is_available(), reason="torch built without distributed")
def test_two_processes_train_in_lockstep(tmp_path):
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    env.pop("WORLD_SIZE", None)
    proc = subprocess.run(
        [*torchrun(), "--standalone", "--nproc_per_node=2", str(SCRIPT), str(tmp_path)],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]

    rank0, rank1 = load_file(tmp_path / "rank0.safetensors"), load_file(tmp_path / "rank1.safetensors")
    assert rank0.keys() == rank1.keys()
    for name in rank0:
        assert torch.equal(rank0[name], rank1[name]), name

    state = json.loads((tmp_path / "ckpt/last/state.json").read_text())
    assert state["world_size"] == 2 and state["epoch"] == 3
    assert (tmp_path / "ckpt/best/model.safetensors").is_file()
    assert sorted(p.name for p in (tmp_path / "ckpt").iterdir()) == ["best", "last"]

    history = json.loads((tmp_path / "result.json").read_text())["history"]
    losses = [h["train"]["loss"] for h in history]
    assert losses[-1] < 0.5 * losses[0]
    assert "abs_err" in history[0]["train"]
    # 256 rows / 2 ranks / 32 per batch = 4 steps per epoch on each rank.
    assert state["global_step"] == 16
