"""Tiny regression trained by the Trainer; run by test_distributed.py under
`torchrun --standalone --nproc_per_node=2 tests/train/ddp_script.py OUT_DIR`.

Writes OUT_DIR/rank<r>.safetensors (final weights of each rank) and OUT_DIR/result.json (rank 0).
The script is the same code a single-process run would use: nothing here mentions ranks except the
output file names.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import torch
from torch import nn

from recstack.train import TrainConfig, Trainer, save_weights, seed_everything


class Regressor(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Linear(4, 16), nn.ReLU(), nn.Dropout(0.1), nn.Linear(16, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x).squeeze(-1)

    def loss(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        mse = ((self(batch["x"]) - batch["y"]) ** 2).mean()
        return {"loss": mse, "abs_err": (self(batch["x"]) - batch["y"]).abs().mean().detach()}


def main(out: Path) -> None:
    torch.set_num_threads(1)
    g = torch.Generator().manual_seed(0)
    x = torch.randn(256, 4, generator=g)
    y = x @ torch.tensor([1.0, -2.0, 3.0, 0.5])
    val_x, val_y = x[:64], y[:64]
    seed_everything(0)
    model = Regressor()
    config = TrainConfig(
        epochs=4,
        batch_size=32,
        lr=0.03,
        progress=True,
        monitor="neg_mse",
        patience=0,
        checkpoint_dir=str(out / "ckpt"),
        log_every=2,
    )
    evaluate = lambda m: {"neg_mse": -float(((m(val_x) - val_y) ** 2).mean())}  # noqa: E731
    result = Trainer(model, config, {"x": x, "y": y}, evaluate=evaluate).fit()
    rank = int(os.environ.get("RANK", "0"))
    save_weights(model, out / f"rank{rank}.safetensors")
    if rank == 0:
        (out / "result.json").write_text(json.dumps({"history": result.history, "best_epoch": result.best_epoch}))


if __name__ == "__main__":
    main(Path(sys.argv[1]))
