"""MLP: a stack of Linear -> (LayerNorm) -> activation -> dropout blocks, then a plain output Linear.

The output layer has no activation, norm or dropout (towers usually L2-normalise or feed a head
after it); pass `out_dim=None` to end on the last hidden block instead.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from recstack.errors import ConfigError

ACTIVATIONS: dict[str, type[nn.Module]] = {"relu": nn.ReLU, "gelu": nn.GELU, "silu": nn.SiLU, "tanh": nn.Tanh}


class MLP(nn.Module):
    """[..., in_dim] -> [..., out_dim] (or [..., hidden[-1]] when out_dim is None).

    hidden:     widths of the hidden blocks (may be empty: then a single Linear in_dim -> out_dim).
    activation: one of ACTIVATIONS.
    dropout:    applied after each hidden block's activation.
    layer_norm: LayerNorm before each hidden block's activation.
    """

    def __init__(
        self,
        in_dim: int,
        hidden: Sequence[int] = (),
        out_dim: int | None = None,
        activation: str = "relu",
        dropout: float = 0.0,
        layer_norm: bool = False,
    ) -> None:
        super().__init__()
        if activation not in ACTIVATIONS:
            raise ConfigError(f"activation {activation!r} is not one of {', '.join(ACTIVATIONS)}")
        if not 0.0 <= dropout < 1.0:
            raise ConfigError(f"dropout must be in [0, 1), got {dropout}")
        if out_dim is None and not hidden:
            raise ConfigError("MLP needs at least one hidden width or an out_dim")
        layers: list[nn.Module] = []
        width = in_dim
        for size in hidden:
            layers.append(nn.Linear(width, size))
            if layer_norm:
                layers.append(nn.LayerNorm(size))
            layers.append(ACTIVATIONS[activation]())
            if dropout > 0:
                layers.append(nn.Dropout(dropout))
            width = size
        if out_dim is not None:
            layers.append(nn.Linear(width, out_dim))
            width = out_dim
        self.layers = nn.Sequential(*layers)
        self.in_dim, self.out_dim = in_dim, width

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layers(x)
