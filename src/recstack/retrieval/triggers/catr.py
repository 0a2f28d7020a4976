"""CATR — Channel-Adaptive Trigger Routing model of CAPTS (METHODS.md §2.5, arXiv 2602.12564).

Per candidate trigger t of a user:

    h_t        = MLP([e_t, age_t, TA(e_t, context), own feedback, item features])   shared encoder
    v_{t,c}    = w_c · h_t                       channel-specific value heads (logits, BCE on VAM labels)
    ṽ_{t,c}    = exp(a_c · v_{t,c} + b_c)         calibrator: expected future engagement found, one scale
                                                 for all channels (Poisson NLL on VAM values; [I])
    u_{t,c}    = σ(q_c · h_t)                     uniqueness head: t's expansion on c finds future items
                                                 no other channel finds (BCE on VAM `unique`; [I])

TA = DIN target attention of the trigger over the user's candidate list (the context). The loss is
BCE(v, label) + calibration_weight · PoissonNLL(ṽ, value) + diversity_weight · BCE(u, unique > 0).
The calibrator sees the value logits detached, so it rescales them without bending the heads [I].
Item features (fixed): log popularity and, per channel, log neighbour count of the trigger.

`single_head=True` makes the LIC-style baseline: one head trained on the trigger's own feedback.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from recstack.errors import ConfigError
from recstack.nn.mlp import MLP
from recstack.nn.target_attention import TargetAttention


@dataclass
class CATRConfig:
    dim: int = 32  # item / age embedding width
    hidden: list[int] = field(default_factory=lambda: [64])
    dropout: float = 0.1
    use_item_ids: bool = True  # item-id embeddings (False: only features and attention over ids' features)
    calibration_weight: float = 0.5
    diversity_weight: float = 0.5
    epochs: int = 6
    batch_size: int = 256  # episodes per step
    lr: float = 3e-3
    weight_decay: float = 1e-5
    seed: int = 0

    def __post_init__(self) -> None:
        if self.dim < 1 or self.epochs < 1 or self.batch_size < 1 or self.lr <= 0:
            raise ConfigError("catr: dim, epochs, batch_size must be >= 1 and lr > 0")


class CATR(nn.Module):
    """(candidates [B, M] long, feedback [B, M]) -> value logits [B, M, H], uniqueness logits [B, M, H].

    H = number of channels (or 1 for the single-head LIC baseline). item_features: [num_items + 1, F]."""

    item_features: torch.Tensor

    def __init__(self, config: CATRConfig, item_features: torch.Tensor, num_heads: int, max_candidates: int) -> None:
        super().__init__()
        self.config = config
        num_items = item_features.shape[0] - 1
        self.register_buffer("item_features", item_features.float())
        self.item_embedding = nn.Embedding(num_items + 1, config.dim, padding_idx=0)
        nn.init.normal_(self.item_embedding.weight, std=0.05)
        with torch.no_grad():
            self.item_embedding.weight[0].zero_()
        self.feature_projection = nn.Linear(item_features.shape[1], config.dim)
        self.age_embedding = nn.Embedding(max_candidates, config.dim)
        self.attention = TargetAttention(config.dim, hidden=(32,), softmax=True)
        self.encoder = MLP(3 * config.dim + 1 + item_features.shape[1], config.hidden, None, dropout=config.dropout)
        width = config.hidden[-1] if config.hidden else 3 * config.dim + 1 + item_features.shape[1]
        self.value_heads = nn.Linear(width, num_heads)
        self.unique_heads = nn.Linear(width, num_heads)
        self.calibration_scale = nn.Parameter(torch.ones(num_heads))
        self.calibration_bias = nn.Parameter(torch.zeros(num_heads))

    def forward(self, candidates: torch.Tensor, feedback: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        size, width = candidates.shape
        features = self.item_features[candidates]  # [B, M, F]
        embedded = self.feature_projection(features)
        if self.config.use_item_ids:
            embedded = embedded + self.item_embedding(candidates)
        mask = candidates > 0
        # every trigger attends over the user's whole candidate list: [B*M, D] queries, [B*M, M, D] keys
        queries = embedded.reshape(size * width, -1)
        keys = embedded.unsqueeze(1).expand(size, width, width, -1).reshape(size * width, width, -1)
        attended = self.attention(
            queries, keys, mask.unsqueeze(1).expand(size, width, width).reshape(size * width, width)
        )
        age = self.age_embedding(torch.arange(width, device=candidates.device)).expand(size, width, -1)
        hidden = self.encoder(
            torch.cat([embedded, age, attended.reshape(size, width, -1), feedback.unsqueeze(-1), features], -1)
        )
        return self.value_heads(hidden), self.unique_heads(hidden)

    def calibrated(self, value_logits: torch.Tensor) -> torch.Tensor:
        """[..., H] expected future engagement found by each channel: exp(a_c · v + b_c)."""
        return torch.exp((self.calibration_scale * value_logits + self.calibration_bias).clamp(max=20.0))


def catr_loss(
    model: CATR,
    candidates: torch.Tensor,
    feedback: torch.Tensor,
    label: torch.Tensor,
    value: torch.Tensor,
    unique: torch.Tensor,
) -> torch.Tensor:
    """Mean over real candidates of BCE(value head) + calibration + diversity. label/value/unique: [B, M, H]."""
    value_logits, unique_logits = model(candidates, feedback)
    mask = (candidates > 0).unsqueeze(-1).expand_as(label).float()
    count = mask.sum().clamp(min=1.0)
    bce = (F.binary_cross_entropy_with_logits(value_logits, label, reduction="none") * mask).sum() / count
    rate = model.calibrated(value_logits.detach())
    calibration = (F.poisson_nll_loss(rate, value, log_input=False, reduction="none") * mask).sum() / count
    diversity = (
        F.binary_cross_entropy_with_logits(unique_logits, (unique > 0).float(), reduction="none") * mask
    ).sum() / count
    config = model.config
    return bce + config.calibration_weight * calibration + config.diversity_weight * diversity


def fit_catr(
    model: CATR,
    candidates: torch.Tensor,
    feedback: torch.Tensor,
    label: torch.Tensor,
    value: torch.Tensor,
    unique: torch.Tensor,
    progress: bool = False,
) -> list[float]:
    """Adam over shuffled episode batches for `config.epochs`; returns the mean loss of each epoch.

    candidates/feedback: [E, M]; label/value/unique: [E, M, H]."""
    from recstack.progress import progress_bar

    config = model.config
    generator = torch.Generator().manual_seed(config.seed)
    optimizer = torch.optim.Adam(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    history = []
    model.train()
    for epoch in range(config.epochs):
        order = torch.randperm(candidates.shape[0], generator=generator)
        total, steps = 0.0, 0
        batches = range(0, order.numel(), config.batch_size)
        for start in progress_bar(batches, desc=f"catr epoch {epoch + 1}", disable=not progress, leave=False):
            rows = order[start : start + config.batch_size]
            loss = catr_loss(model, candidates[rows], feedback[rows], label[rows], value[rows], unique[rows])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            total, steps = total + float(loss.detach()), steps + 1
        history.append(total / max(steps, 1))
    model.eval()
    return history
