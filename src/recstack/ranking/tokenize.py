"""Feature tokenisation for token-based rankers (RankMixer, METHODS.md §1.1; TokenMixer-Large, §2.4):
model inputs -> tokens [N, S, D]. Shared by rankmixer / tokenmixer_large and usable by other models.

Fields come from the FeatureEncoder (ranking/features.py), grouped semantically:
  user       user id + user categorical + numeric fields              [N, user_dim - d_scenario]
  item_id    candidate item id embedding                              [N, d]
  item_side  candidate item categorical + numeric fields              [N, item_dim - d]
  item       item_id and item_side as one group
  context    scenario embedding (+ 4 cyclic hour/weekday features of request_time when `request_time`)
  sequence   the history compressed to `sequence_tokens` vectors (each its own token):
             "target_attention" (DIN, query = candidate; 1 token), "query_former" (M learnable queries,
             nn/query_former.py), or "mean" (masked mean; 1 token). History keys = item vectors
             + (when the inputs carry them) an event-type embedding of history_event [N, T] and a
             log-bucketed embedding of history_time [N, T] (seconds before the request).
mode "groups" (TokenMixer-Large): token i = MLP_i(concat(group i)) (per-group MLPs run as one batched
per-token einsum over zero-padded group fields), plus a global [CLS]-like token MLP_g(concat of all raw
fields) first when `global_token`. mode "autosplit" (RankMixer): the concatenation of all groups is cut
into `num_tokens` contiguous segments, each with its own projection (segments ignore field boundaries).
Groups that are empty for a dataset (no item side columns, no scenario) are dropped; `names` lists the
tokens. Optional inputs history_time / history_event / request_time fall back to zero embeddings.
Our interpretations [I] (each a flag): the history shares the candidate's item embedding; the context
group carries request_time as sin/cos of hour of day and weekday (`request_time`); target attention is
unnormalised as in DIN (`attention_softmax`); time buckets are floor(ln(1 + seconds) / 0.301)
(`time_buckets`, 0 = off); event codes above `event_vocab - 1` share the last row; the per-group "MLP"
is one linear projection unless `hidden` lists hidden widths (a public TML re-impl uses one ReLU layer).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

import torch
import torch.nn.functional as F
from torch import nn

from recstack.errors import ConfigError
from recstack.nn.embedding import id_embedding
from recstack.nn.mlp import MLP
from recstack.nn.per_token import PerTokenLinear
from recstack.nn.target_attention import TargetAttention
from recstack.ranking.features import FeatureEncoder

if TYPE_CHECKING:
    from recstack.nn.query_former import QueryFormer

GROUPS = ("user", "item_id", "item_side", "item", "context", "sequence")
SEQUENCE_MODES = ("target_attention", "query_former", "mean")


@dataclass
class TokenizerConfig:
    mode: Literal["groups", "autosplit"] = "groups"
    groups: list[str] = field(default_factory=lambda: ["user", "item_id", "item_side", "context", "sequence"])
    num_tokens: int = 8  # autosplit only: number of segments
    global_token: bool = True  # groups mode: a [CLS]-like token from all raw fields
    hidden: list[int] = field(default_factory=list)  # per-group MLP hidden widths ([] = one projection)
    sequence: str = "target_attention"  # one of SEQUENCE_MODES
    sequence_tokens: int = 1  # query_former: number of queries (= sequence tokens)
    sequence_heads: int = 1  # query_former heads (must divide the item vector width)
    attention_hidden: list[int] = field(default_factory=lambda: [16])
    attention_softmax: bool = False
    history_event: bool = True  # add an event-type embedding to history keys when given
    event_vocab: int = 16
    time_buckets: int = 32  # log-time embedding of history_time when given; 0 = off
    request_time: bool = True  # cyclic request_time features in the context group

    def __post_init__(self) -> None:
        unknown = [g for g in self.groups if g not in GROUPS]
        if unknown or not self.groups or len(set(self.groups)) != len(self.groups):
            raise ConfigError(
                f"tokenizer.groups: {unknown[0] if unknown else self.groups!r} is not valid; "
                f"use distinct names from {', '.join(GROUPS)}"
            )
        if "item" in self.groups and ({"item_id", "item_side"} & set(self.groups)):
            raise ConfigError("tokenizer.groups: 'item' already holds item_id and item_side")
        if self.mode not in ("groups", "autosplit"):
            raise ConfigError(f"tokenizer.mode must be 'groups' or 'autosplit', got {self.mode!r}")
        if self.sequence not in SEQUENCE_MODES:
            raise ConfigError(f"tokenizer.sequence must be one of {', '.join(SEQUENCE_MODES)}, got {self.sequence!r}")
        if self.num_tokens < 1 or self.sequence_tokens < 1 or self.event_vocab < 2 or self.time_buckets < 0:
            raise ConfigError("tokenizer: num_tokens, sequence_tokens >= 1, event_vocab >= 2, time_buckets >= 0")
        if self.sequence != "query_former" and self.sequence_tokens != 1:
            raise ConfigError(f"tokenizer.sequence_tokens > 1 needs sequence 'query_former', got {self.sequence!r}")


def request_time_features(request_time: torch.Tensor | None, n: int, device: torch.device) -> torch.Tensor:
    """[N] unix seconds -> [N, 4] (sin, cos) of hour-of-day and weekday phase; zeros when absent."""
    if request_time is None:
        return torch.zeros(n, 4, device=device)
    t = request_time.double()
    day, week = (t % 86400) / 86400 * 2 * math.pi, (t % 604800) / 604800 * 2 * math.pi
    return torch.stack([day.sin(), day.cos(), week.sin(), week.cos()], -1).float()


class FeatureTokenizer(nn.Module):
    """forward(inputs) -> tokens [N, S, dim]; `names` (S entries) and `num_tokens` are fixed at build time.

    inputs: users, items [N]; history [N, T] (0 = padding); optional scenario [N], history_time [N, T],
    history_event [N, T], request_time [N]. `fields(inputs)` gives the raw group fields, and
    `candidate_tokens` embeds items [...] (e.g. [N, K] candidates) as [..., n_item_groups, dim].
    `features` (the FeatureEncoder) is used, not owned: register it on the enclosing model.
    """

    features: FeatureEncoder  # set with object.__setattr__ (not a registered child)
    compress: TargetAttention | QueryFormer

    def __init__(self, features: FeatureEncoder, dim: int, config: TokenizerConfig) -> None:
        super().__init__()
        # Not registered as a child: the model that owns the encoder (RankingModel.features) holds its
        # weights, so the state dict has no second copy of the embedding tables.
        object.__setattr__(self, "features", features)
        self.config, self.dim = config, dim
        d, item_dim = features.item_id.embedding_dim, features.item_dim
        self.scenario_dim = d if features.scenario is not None else 0
        context = self.scenario_dim + (4 if config.request_time else 0)
        widths = {
            "user": features.user_dim - self.scenario_dim,
            "item_id": d,
            "item_side": item_dim - d,
            "item": item_dim,
            "context": context,
            "sequence": item_dim,
        }
        self.groups = [g for g in config.groups if widths[g] > 0]
        if not self.groups:
            raise ConfigError(f"tokenizer.groups {config.groups} are all empty for this dataset")
        seq = config.sequence_tokens if "sequence" in self.groups else 0
        self.field_names = [
            n for g in self.groups for n in ([f"sequence_{i}" for i in range(seq)] if g == "sequence" else [g])
        ]
        self.widths = [widths["sequence" if n.startswith("sequence_") else n] for n in self.field_names]
        if "sequence" in self.groups:
            self.event = id_embedding(config.event_vocab, item_dim) if config.history_event else None
            self.time = id_embedding(config.time_buckets + 1, item_dim) if config.time_buckets else None
            if config.sequence == "target_attention":
                self.compress = TargetAttention(item_dim, config.attention_hidden, softmax=config.attention_softmax)
            elif config.sequence == "query_former":
                from recstack.nn.query_former import QueryFormer

                self.compress = QueryFormer(item_dim, config.sequence_tokens, config.sequence_heads)
        total = sum(self.widths)
        if config.mode == "autosplit":
            t = config.num_tokens
            self.segment = -(-total // t)  # ceil: the concatenation is zero-padded to t * segment
            self.project = _per_token_mlp(t, self.segment, config.hidden, dim)
            self.names = [f"segment_{i}" for i in range(t)]
            self.global_mlp = None
        else:
            self.project = _per_token_mlp(len(self.widths), max(self.widths), config.hidden, dim)
            self.global_mlp = MLP(total, config.hidden, out_dim=dim) if config.global_token else None
            self.names = (["global"] if self.global_mlp is not None else []) + self.field_names
        self.num_tokens = len(self.names)

    def _history_keys(self, inputs: dict[str, Any], history_vectors: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
        keys = history_vectors
        if self.config.history_event and inputs.get("history_event") is not None:
            codes = inputs["history_event"].long().clamp(0, self.config.event_vocab - 1).masked_fill(~valid, 0)
            assert self.event is not None  # built when history_event is on
            keys = keys + self.event(codes)
        if self.config.time_buckets and inputs.get("history_time") is not None:
            seconds = inputs["history_time"].float().clamp(min=0)
            buckets = (torch.log1p(seconds) / 0.301).long().clamp(0, self.config.time_buckets - 1) + 1
            assert self.time is not None  # built when time_buckets > 0
            keys = keys + self.time(buckets.masked_fill(~valid, 0))
        return keys

    def fields(self, inputs: dict[str, Any]) -> list[torch.Tensor]:
        """Raw fields, one [N, width] tensor per entry of `field_names`."""
        items, history = inputs["items"], inputs["history"]
        history = history.masked_fill((history > self.features.num_items) | (history < 0), 0)
        vectors = self.features.item_vectors(torch.cat([items.unsqueeze(1), history], dim=1))  # [N, 1 + T, item_dim]
        item, d = vectors[:, 0], self.features.item_id.embedding_dim
        user = self.features.user_vectors(inputs["users"], inputs.get("scenario"))
        parts: dict[str, list[torch.Tensor]] = {
            "user": [user[:, : user.shape[1] - self.scenario_dim]],
            "item_id": [item[:, :d]],
            "item_side": [item[:, d:]],
            "item": [item],
        }
        context = [user[:, user.shape[1] - self.scenario_dim :]]
        if self.config.request_time:
            context.append(request_time_features(inputs.get("request_time"), items.shape[0], item.device))
        parts["context"] = [torch.cat(context, -1)]
        if "sequence" in self.groups:
            valid = history > 0
            keys = self._history_keys(inputs, vectors[:, 1:], valid)
            if self.config.sequence == "target_attention":
                parts["sequence"] = [self.compress(item, keys, valid)]
            elif self.config.sequence == "mean":
                parts["sequence"] = [(keys * valid.unsqueeze(-1)).sum(1) / valid.sum(1, keepdim=True).clamp(min=1)]
            else:
                parts["sequence"] = list(self.compress(keys, valid).unbind(1))
        return [f for g in self.groups for f in parts[g]]

    def forward(self, inputs: dict[str, Any]) -> torch.Tensor:
        fields = self.fields(inputs)
        flat = torch.cat(fields, -1)  # [N, total]
        if self.config.mode == "autosplit":
            segments = F.pad(flat, (0, self.segment * self.config.num_tokens - flat.shape[1]))
            return self.project(segments.view(flat.shape[0], self.config.num_tokens, self.segment))
        width = max(self.widths)
        padded = torch.stack([F.pad(f, (0, width - f.shape[1])) for f in fields], 1)  # [N, G, width]
        tokens = self.project(padded)
        if self.global_mlp is not None:
            tokens = torch.cat([self.global_mlp(flat).unsqueeze(1), tokens], 1)
        return tokens

    def candidate_tokens(self, items: torch.Tensor) -> torch.Tensor:
        """items [...] -> [..., G_item, dim] through the item groups' own projections (groups mode)."""
        idx = [i for i, n in enumerate(self.field_names) if n in ("item_id", "item_side", "item")]
        if self.config.mode != "groups" or not idx:
            raise ConfigError("candidate_tokens needs tokenizer.mode 'groups' with an item group")
        vectors, d = self.features.item_vectors(items), self.features.item_id.embedding_dim
        width = max(self.widths)
        by_name = {"item_id": vectors[..., :d], "item_side": vectors[..., d:], "item": vectors}
        padded = torch.stack([F.pad(by_name[self.field_names[i]], (0, width - self.widths[i])) for i in idx], -2)
        shape = padded.shape[:-2]
        full = padded.new_zeros(*shape, len(self.widths), width)
        full[..., idx, :] = padded  # run the batched projection, keep the item rows
        return self.project(full.reshape(-1, len(self.widths), width))[:, idx].reshape(*shape, len(idx), self.dim)


def _per_token_mlp(tokens: int, in_dim: int, hidden: list[int], out_dim: int) -> nn.Sequential:
    """Independent MLP per token position, all positions in one einsum per layer: [N, T, in] -> [N, T, out]."""
    layers: list[nn.Module] = []
    for width in hidden:
        layers += [PerTokenLinear(tokens, in_dim, width), nn.ReLU()]
        in_dim = width
    layers.append(PerTokenLinear(tokens, in_dim, out_dim))
    return nn.Sequential(*layers)
