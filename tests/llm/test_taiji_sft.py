"""SFT checkpoints with the tiny Llama: a run killed mid-epoch and resumed ends at the same adapter."""

import json

import pytest
import torch

from recstack.errors import DataError
from recstack.llm.lora import LoraSettings
from recstack.llm.taiji.sft import SFTConfig, train_sft
from recstack.llm.tiny import tiny_llama
from tests.helpers import seeded

PROMPTS = [[{"role": "user", "content": f"history: item {i}, lipstick"}] for i in range(5)]
TARGETS = ["likes nails", "colour matters\n<answer>", "lips then nails", "x", "buys makeup weekly"]
# 5 samples in batches of 2: 3 steps per epoch, 9 in all; warm-up lasts past the kill so the resumed
# schedule must pick up mid-ramp, and LoRA dropout makes the result depend on the restored RNG state
CONFIG = SFTConfig(
    epochs=3, batch_size=2, lr=3e-2, warmup_steps=6, save_every=2, progress=False, lora=LoraSettings(r=2, dropout=0.2)
)


def train(folder, kill_at=None, samples=len(PROMPTS)):
    torch.manual_seed(seeded(0))  # the LoRA A matrices are drawn from the global RNG
    student = tiny_llama(seed=seeded(0), context_window=256)
    steps = []

    def log(entry):
        if entry["step"] == kill_at:
            raise KeyboardInterrupt("killed")
        steps.append(entry["step"])

    history = train_sft(student, PROMPTS[:samples], TARGETS[:samples], CONFIG, log, folder)
    adapter = {n: p.detach().clone() for n, p in student.model.named_parameters() if "lora_" in n}
    return history, adapter, steps


def test_killed_sft_resumes_to_the_same_adapter(tmp_path):
    history, adapter, _ = train(tmp_path / "whole")
    assert len(history) == 9 and adapter
    with pytest.raises(KeyboardInterrupt):
        train(tmp_path / "split", kill_at=5)  # mid epoch 1, one step after the checkpoint of step 4
    state = json.loads((tmp_path / "split" / "checkpoint" / "state.json").read_text())
    assert state["step"] == 4
    assert not list((tmp_path / "split").glob(".checkpoint.tmp-*"))  # written whole or not at all
    resumed_history, resumed, steps = train(tmp_path / "split")
    assert steps == [5, 6, 7, 8, 9]  # only the steps after the checkpoint ran again
    assert [(h["step"], h["epoch"], h["lr"]) for h in resumed_history] == [
        (h["step"], h["epoch"], h["lr"]) for h in history
    ]
    assert [h["loss"] for h in resumed_history] == pytest.approx([h["loss"] for h in history], abs=1e-6)
    assert resumed.keys() == adapter.keys()
    for name in adapter:
        assert torch.allclose(resumed[name], adapter[name], atol=1e-6), name
    assert sorted(p.name for p in (tmp_path / "split" / "checkpoint").iterdir()) == [
        "adapter",
        "optimizer.safetensors",
        "rng.safetensors",
        "state.json",
    ]


def test_a_checkpoint_of_other_samples_is_not_resumed(tmp_path):
    with pytest.raises(KeyboardInterrupt):
        train(tmp_path, kill_at=3)
    with pytest.raises(DataError, match="delete it to train from scratch"):
        train(tmp_path, samples=4)
