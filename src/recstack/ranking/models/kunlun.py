"""Kunlun: an MFU-aware unified ranker (Hou et al., arXiv 2602.10016, Meta Ads; METHODS.md §2.9) ("kunlun").

Mechanism: non-sequence tokens X (the shared FeatureTokenizer of ranking/tokenize.py, `tokenizer`:
global, user, candidate item id / side, context tokens) and one history stream per event type. Each
layer: weight generation compresses X to X_sum (token-axis linear + MLP); per stream, a local step
(sliding-window self-attention with ROTE, rotary phases from log time gaps) and/or a global step
(GDPA: the sequence cross-attends to X_sum, InterFormer's personalised FFN; then HSP: over-complete
seeds pool the sequence, SumKronLinear compresses them to summary tokens H); then a mixture of Wukong
experts over concat(X_sum, H of every stream) updates X.
CompSkip alternates layers: even = global (GDPA + fresh HSP), odd = local (SWA, HSP reused from cache).
Event-level personalisation: every stream has its own width / heads / tokens / layers / window, e.g. on
the world (codes 2 click, 3 long_view, 4 like, 5 purchase): `events: {deep: {codes: [4, 5], dim: 64,
heads: 4, tokens: 8, seeds: 16, window: 16}, shallow: {codes: [2, 3], dim: 32, tokens: 4, layers: 1}}`.
Readout: flattened X -> MMoE -> one tower per task (task-weighted BCE; no auxiliary loss: dense gates).

Inputs: users, items [N]; history [N, T] (0 = padding); optional scenario [N], history_time [N, T]
(seconds before the request; without it ROTE falls back to position indices), history_event [N, T]
(behaviour codes of ranking/samples.py: 1 = exposure, 2 + deepest funnel label; 0 = padding).
Our interpretation [I] (each a flag):
- `rote_phase` "age" (phase = log(1 + age / rote_time_scale)) or "gap" (cumulative log inter-event
  gaps); `rote_time_scale` seconds (3600); `rote` off = no rotary encoding at all.
- `swa_causal`: an event sees only older events in its window (else both sides).
- `gdpa_activation` softmax (re-implementation) or silu (SiLU / N); `gdpa_temperature` "maxlen" or "sqrt_dim".
- `kron_rank` k of SumKronLinear (2); HSP seeds per stream `events.<name>.seeds`.
- `compskip`: layer 0 is global; a stream's trailing local layers (whose output no later HSP reads)
  are skipped, so use an odd `layers` with CompSkip. Without CompSkip every layer is local + global.
- `swa` off = full self-attention in local steps (the FLOPs baseline of SWA).
- `event_embedding`: a learned behaviour-code embedding added to each history token (`event_vocab` codes).
- `streams_see_all_without_events`: without history_event every stream reads every event (else streams
  with explicit `codes` see nothing and pool zeros).
- interaction: `experts` dense-gated Wukong experts (FM rank `fm_rank`, MLP `expert_hidden`) output the
  n_ns tokens of X, added residually; X_sum has `summary_tokens` tokens. `norm_first`: LayerNorm X before
  weight generation (pre-LN) or, the default, after the residual (post-LN, X = LN(X + mix): it learned
  the world's rare purchase task faster in our short runs).
Speed switches with identical results: `trim_padding` (drop all-padding history columns per batch),
`gdpa_fused` (softmax GDPA through F.scaled_dot_product_attention).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal, cast

import torch
from torch import nn

from recstack.errors import ConfigError
from recstack.nn.gdpa import GDPA
from recstack.nn.hsp import HSP
from recstack.nn.mlp import MLP
from recstack.nn.mmoe import MMoE
from recstack.nn.rote import rote_phases
from recstack.nn.sliding_window import SlidingWindowSelfAttention
from recstack.nn.wukong import WukongMoE
from recstack.ranking.base import Ranker, RankerConfig, RankingModel
from recstack.ranking.features import FeatureEncoder, FeatureSchema
from recstack.ranking.heads import TaskTowers
from recstack.ranking.tokenize import FeatureTokenizer, TokenizerConfig
from recstack.registry import register


@dataclass
class EventStreamConfig:
    codes: list[int] = field(default_factory=list)  # history_event codes read by this stream; [] = every event
    dim: int | None = None  # stream width; None = the model's `dim` (so a `dim` sweep scales streams too)
    heads: int = 2
    tokens: int = 4  # HSP summary tokens
    seeds: int = 8  # over-complete HSP seeds (> tokens)
    layers: int | None = None  # layers this stream takes part in (None = all)
    window: int = 8  # SWA window (keys per query, causal)
    max_len: int | None = None  # most recent events of this type kept (None = the whole history)


@dataclass
class KunlunConfig(RankerConfig):
    dim: int = 32
    layers: int = 3
    tokenizer: TokenizerConfig = field(
        default_factory=lambda: TokenizerConfig(groups=["user", "item_id", "item_side", "context"])
    )  # non-sequence tokens X; the history is in `events`
    summary_tokens: int = 4
    events: dict[str, EventStreamConfig] = field(default_factory=lambda: {"all": EventStreamConfig()})
    compskip: bool = True
    swa: bool = True
    swa_causal: bool = True
    rote: bool = True
    rote_phase: Literal["age", "gap"] = "age"
    rote_time_scale: float = 3600.0
    gdpa_activation: Literal["softmax", "silu"] = "softmax"
    gdpa_temperature: Literal["maxlen", "sqrt_dim"] = "maxlen"
    gdpa_fused: bool = False  # softmax GDPA through F.scaled_dot_product_attention (GPU speed path)
    kron_rank: int = 2
    experts: int = 2
    fm_rank: int = 4
    expert_hidden: int = 64
    event_embedding: bool = True
    event_vocab: int = 16
    streams_see_all_without_events: bool = True
    norm_first: bool = False
    trim_padding: bool = True  # drop history columns that are padding in every row of the batch (speed)
    mmoe_experts: int = 2
    mmoe_hidden: list[int] = field(default_factory=lambda: [64])
    tower_hidden: list[int] = field(default_factory=lambda: [32])

    def __post_init__(self) -> None:
        for key in (
            "dim",
            "layers",
            "summary_tokens",
            "kron_rank",
            "experts",
            "fm_rank",
            "expert_hidden",
            "mmoe_experts",
        ):
            if getattr(self, key) < 1:
                raise ConfigError(f"kunlun: {key} must be >= 1, got {getattr(self, key)!r}")
        if self.rote_time_scale <= 0 or self.event_vocab < 2 or not self.mmoe_hidden:
            raise ConfigError("kunlun: rote_time_scale must be > 0, event_vocab >= 2 and mmoe_hidden non-empty")
        if "sequence" in self.tokenizer.groups:
            raise ConfigError("kunlun: tokenizer.groups must not hold 'sequence' (the history goes to `events`)")
        if not self.events:
            raise ConfigError("kunlun: events needs at least one stream, e.g. {all: {}}")
        self.events = {
            k: v if isinstance(v, EventStreamConfig) else EventStreamConfig(**v) for k, v in self.events.items()
        }
        for name, s in self.events.items():
            where = f"kunlun: events.{name}"
            s.dim = self.dim if s.dim is None else s.dim
            if s.dim < 1 or s.heads < 1 or s.dim % s.heads or (s.dim // s.heads) % 2:
                raise ConfigError(f"{where}.dim ({s.dim}) must split into heads ({s.heads}) of even width")
            if not 1 <= s.tokens < s.seeds:
                raise ConfigError(f"{where}.seeds ({s.seeds}) must exceed tokens ({s.tokens}) >= 1 (over-complete)")
            if s.window < 1 or (s.max_len is not None and s.max_len < 1):
                raise ConfigError(f"{where}.window and max_len must be >= 1")
            if s.layers is not None and not 1 <= s.layers <= self.layers:
                raise ConfigError(f"{where}.layers must be in [1, layers={self.layers}], got {s.layers}")
            if any(not 0 < c < self.event_vocab for c in s.codes):
                raise ConfigError(f"{where}.codes must be in [1, event_vocab={self.event_vocab})")


def stream_schedule(layers: int, compskip: bool) -> list[tuple[bool, bool]]:
    """(local, global) steps per layer; with CompSkip trailing local-only layers are dropped (dead compute)."""
    steps = [(not compskip or i % 2 == 1, not compskip or i % 2 == 0) for i in range(layers)]
    return steps[: max(i for i, (_, glob) in enumerate(steps) if glob) + 1]


class KunlunStream(nn.Module):
    """One event type's history: tokens [N, T_s, d_s] -> summary tokens [N, tokens, model_dim] per layer."""

    def __init__(self, s: EventStreamConfig, c: KunlunConfig, item_dim: int) -> None:
        super().__init__()
        assert s.dim is not None  # KunlunConfig.__post_init__ fills it
        self.codes, self.max_len = list(s.codes), s.max_len
        self.schedule = stream_schedule(s.layers or c.layers, c.compskip)
        self.input = nn.Linear(item_dim, s.dim)
        self.event = nn.Embedding(c.event_vocab, s.dim) if c.event_embedding else None
        window = s.window if c.swa else None
        self.attn = nn.ModuleList(
            SlidingWindowSelfAttention(s.dim, s.heads, window, c.swa_causal) if local else nn.Identity()
            for local, _ in self.schedule
        )
        gdpa = (c.gdpa_activation, c.gdpa_temperature, c.gdpa_fused)
        self.gdpa = nn.ModuleList(
            GDPA(s.dim, c.dim, s.heads, *gdpa) if glob else nn.Identity() for _, glob in self.schedule
        )
        self.hsp = nn.ModuleList(
            HSP(s.dim, s.heads, s.seeds, s.tokens, c.dim, c.kron_rank) if glob else nn.Identity()
            for _, glob in self.schedule
        )
        self.norms = nn.ModuleList(nn.LayerNorm(s.dim) for _ in range(2 * len(self.schedule)))

    def prepare(
        self,
        hist: torch.Tensor,
        valid: torch.Tensor,
        times: torch.Tensor | None,
        events: torch.Tensor | None,
        c: KunlunConfig,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        """hist [N, T, item_dim] -> (tokens [N, T_s, d_s], valid [N, T_s], ROTE phases [N, T_s] or None).

        This stream's events are right-aligned by a stable sort of its keep mask and the last max_len kept;
        with `trim_padding` the columns that are padding in every row are dropped too (same result, less work)."""
        if not self.codes or (events is None and c.streams_see_all_without_events):
            keep = valid
        elif events is None:
            keep = torch.zeros_like(valid)
        else:
            keep = valid & torch.isin(events, torch.tensor(self.codes, device=valid.device))
        width = min(self.max_len or keep.shape[1], keep.shape[1])
        if c.trim_padding:
            width = min(width, max(1, int(keep.sum(1).max())))
        if self.codes or width < keep.shape[1]:
            order = torch.sort(keep.int(), dim=1, stable=True).indices[:, -width:]
            keep, hist = keep.gather(1, order), hist.gather(1, order.unsqueeze(-1).expand(-1, -1, hist.shape[-1]))
            times, events = [None if x is None else x.gather(1, order) for x in (times, events)]
        tokens = self.input(hist)
        if self.event is not None and events is not None:
            tokens = tokens + self.event(events.clamp(0, c.event_vocab - 1))
        return tokens, keep, rote_phases(keep, times, c.rote_time_scale, c.rote_phase) if c.rote else None

    def forward(
        self,
        layer: int,
        s: torch.Tensor,
        valid: torch.Tensor,
        phases: torch.Tensor | None,
        x_sum: torch.Tensor,
        max_len: int,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """One layer: (s [N, T_s, d_s], summary [N, tokens, dim] or None on a local-only layer).
        max_len: the untrimmed history width (GDPA's "maxlen" temperature)."""
        local, glob = self.schedule[layer]
        if local:
            s = s + self.attn[layer](self.norms[2 * layer](s), valid, phases)
        if not glob:
            return s, None
        s = s + self.gdpa[layer](self.norms[2 * layer + 1](s), x_sum, valid=valid, max_len=max_len)
        return s, self.hsp[layer](s, valid)


class Kunlun(RankingModel):
    """inputs: users, items [N]; history [N, T]; optional scenario, history_time, history_event, request_time
    -> {task: logits [N]}."""

    def __init__(self, features: FeatureEncoder, tasks: list[str], config: KunlunConfig) -> None:
        super().__init__(features, tasks, config.task_weights)
        c = self.config = config
        self.tokenizer = FeatureTokenizer(features, c.dim, c.tokenizer)
        fields = self.tokenizer.num_tokens
        self.token_mix = nn.ParameterList(
            nn.Parameter(torch.randn(fields, c.summary_tokens) / fields**0.5) for _ in range(c.layers)
        )  # weight generation, token axis
        self.summary_mlp = nn.ModuleList(MLP(c.dim, [c.dim], c.dim) for _ in range(c.layers))
        self.streams = nn.ModuleDict({n: KunlunStream(s, c, features.item_dim) for n, s in c.events.items()})
        n_in = c.summary_tokens + sum(s.tokens for s in c.events.values())
        self.interaction = nn.ModuleList(
            WukongMoE(n_in, fields, c.dim, c.experts, c.fm_rank, c.expert_hidden) for _ in range(c.layers)
        )
        self.norms = nn.ModuleList(nn.LayerNorm(c.dim) for _ in range(c.layers))
        self.mmoe = MMoE(fields * c.dim, len(tasks), c.mmoe_experts, c.mmoe_hidden)
        self.heads = TaskTowers(tasks, self.mmoe.out_dim, c.tower_hidden)

    def forward(self, inputs: dict[str, Any]) -> dict[str, torch.Tensor]:
        c, history = self.config, inputs["history"]
        history = history.masked_fill(history > self.features.num_items, 0)
        x = self.tokenizer({**inputs, "history": history[:, :0]})  # [N, F, dim]; no history lookup in there
        hist = self.features.item_vectors(history)  # [N, T, item_dim]
        valid, times, events = history > 0, inputs.get("history_time"), inputs.get("history_event")
        # a loop over event types (a handful), not over events: name -> [tokens, valid, phases, summary]
        streams = cast(Mapping[str, KunlunStream], self.streams)  # a ModuleDict of KunlunStream
        state: dict[str, list[Any]] = {
            n: [*stream.prepare(hist, valid, times, events, c), None] for n, stream in streams.items()
        }
        for layer in range(c.layers):
            normed = self.norms[layer](x) if c.norm_first else x
            x_sum = self.summary_mlp[layer](torch.einsum("nfd,fs->nsd", normed, self.token_mix[layer]))
            for name, stream in streams.items():
                tokens, keep_s, phases, summary = state[name]
                if layer < len(stream.schedule):
                    width = min(stream.max_len or valid.shape[1], valid.shape[1])  # before trimming
                    tokens, fresh = stream(layer, tokens, keep_s, phases, x_sum, width)
                    state[name] = [tokens, keep_s, phases, summary if fresh is None else fresh]
            mixed = self.interaction[layer](torch.cat([x_sum, *[state[n][3] for n in self.streams]], dim=1))
            x = x + mixed if c.norm_first else self.norms[layer](x + mixed)
        return self.heads(self.mmoe(x.flatten(1)))


@register("ranker", "kunlun", config=KunlunConfig)
class KunlunRanker(Ranker):
    name = "kunlun"
    config_class = KunlunConfig
    config: KunlunConfig

    def build_model(self, schema: FeatureSchema) -> Kunlun:
        return Kunlun(FeatureEncoder(schema, self.config.features), self.tasks, self.config)
