"""OneMall (Kuaishou e-commerce, arXiv 2601.21770; METHODS.md §2.16, MoE decoder of OneRec §1.7): a
decoder-only generative retriever over semantic IDs. Registered retriever "onemall".

Mechanism: each behaviour sequence (history items grouped by event code: exposure/all, click, purchase,
...) is compressed by its own Query-Former (M learnable queries cross-attending to it) into M tokens;
the decoder runs causal self-attention over [BOS, c_0, .., c_{C-2}], cross-attends to the concatenated
behaviour summaries (keys/values projected once per user, reused at every decoding step), and its FFN is
a sparse MoE (top-k routing, shared expert, Switch load-balancing loss). Loss = mean next-code CE over the
C levels + aux_loss_weight * MoE balance + contrastive_weight * in-batch InfoNCE on item representations.

Interpretations [I] (each a config flag):
- behaviours: None = an "all" sequence (every history item: the exposure sequence) + one sequence per
  event of the dataset (GenerativeData.event_names) that some but not all interactions have; with no
  events only "all" (default_behaviours).                                                 (behaviours)
- item token = sum of the item's C code embeddings (+ item-id embedding) + event embedding + learned
  recency position (items back from the newest), added before compression. (item_embedding, positions)
- Query-Former depth, self-attention among its queries.           (num_queries, qf_layers, qf_self_attention)
- query_former=False: the decoder cross-attends to the full behaviour sequences (the FLOPs baseline).
  The context always starts with one learned token, so a user without history still has a memory.
- decoder = nn.transformer.DecoderLayer (pre-LN, GELU FFN) with its FFN replaced by SparseMoE in every
  layer; softmax top-k renormalised; expert width = ffn_dim unless expert_dim.
                                           (moe, experts, top_k, shared_expert, expert_dim, aux_loss_weight)
- contrastive: user = decoder state at BOS (it has seen the context only), item = the target's item token
  (code + id embeddings, no event / position); each linearly projected and L2-normalised; in-batch
  negatives, rows with the same target item masked.                  (contrastive_weight, temperature)

Compute: the Query-Former reads each behaviour once; every decoder layer then projects and attends over
1 + behaviours x num_queries tokens instead of all history items, so the saving grows with history
length and decoder depth (benchmarks/generative_flops.py; `compute.flops_per_sample`).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal, cast

import torch
import torch.nn.functional as F
from torch import nn

from recstack.data.dataset import Dataset
from recstack.errors import ConfigError
from recstack.nn.moe import SparseMoE, moe_aux_loss
from recstack.nn.query_former import QueryFormer
from recstack.nn.transformer import DecoderLayer
from recstack.registry import register
from recstack.retrieval.generative.base import DecodeState, GenerativeConfig, GenerativeModel, ModelShape, reorder_state
from recstack.retrieval.generative.behaviours import default_behaviours, pack, resolve_behaviours
from recstack.retrieval.generative.retriever import GenerativeRetriever


@dataclass
class OneMallConfig(GenerativeConfig):
    """behaviours: {sequence name: [event names]} ("*" = every history item); None = see module docstring."""

    dim: int = 64
    heads: int = 4
    layers: int = 2
    ffn_dim: int = 256
    dropout: float = 0.1
    query_former: bool = True
    num_queries: int = 4
    qf_layers: int = 1
    qf_self_attention: bool = True
    behaviours: dict[str, list[str]] | None = None
    item_embedding: bool = False
    positions: bool = True
    moe: bool = True
    experts: int = 4
    top_k: int = 2
    expert_dim: int | None = None  # hidden width of each expert (and the shared one); None = ffn_dim
    shared_expert: bool = True
    expert_activation: Literal["swiglu", "gelu"] = "swiglu"
    moe_dispatch: Literal["sort", "dense"] = "sort"
    aux_loss_weight: float = 0.01
    contrastive_weight: float = 0.1
    temperature: float = 0.07
    init_std: float = 0.02

    def __post_init__(self) -> None:
        super().__post_init__()
        for key in ("dim", "heads", "layers", "ffn_dim", "num_queries", "qf_layers", "experts", "top_k"):
            if getattr(self, key) <= 0:
                raise ConfigError(f"{key} must be > 0, got {getattr(self, key)!r}")
        if self.dim % self.heads:
            raise ConfigError(f"dim ({self.dim}) must be divisible by heads ({self.heads})")
        if self.expert_dim is not None and self.expert_dim <= 0:
            raise ConfigError(f"expert_dim must be > 0 or null, got {self.expert_dim!r}")
        if self.top_k > self.experts:
            raise ConfigError(f"top_k ({self.top_k}) must be <= experts ({self.experts})")
        if not 0.0 <= self.dropout < 1.0:
            raise ConfigError(f"dropout must be in [0, 1), got {self.dropout!r}")
        if self.temperature <= 0 or self.init_std <= 0:
            raise ConfigError(f"temperature and init_std must be > 0, got {self.temperature!r}, {self.init_std!r}")
        if self.aux_loss_weight < 0 or self.contrastive_weight < 0:
            raise ConfigError("aux_loss_weight and contrastive_weight must be >= 0")
        if self.behaviours is not None and not self.behaviours:
            raise ConfigError("behaviours: give at least one sequence, or null for the default")


class OneMall(GenerativeModel):
    """Behaviour Query-Formers -> context [B, N, D]; decoder over [BOS, c_0 .. c_{C-2}] -> C code distributions."""

    offsets: torch.Tensor  # buffer: level -> first row of `codes`

    def __init__(self, c: OneMallConfig, shape: ModelShape, behaviours: dict[str, list[int] | None]) -> None:
        super().__init__(shape.codebook_sizes)
        self.config, d = c, c.dim
        sizes = torch.tensor(self.codebook_sizes)
        self.register_buffer("offsets", torch.cumsum(sizes, 0) - sizes, persistent=False)  # level -> first row
        self.codes = nn.Embedding(int(sizes.sum()), d)  # every level's codes in one table (history and decoder)
        self.items = nn.Embedding(shape.num_items + 1, d, padding_idx=0) if c.item_embedding else None
        self.events = nn.Embedding(max(shape.num_events, 1), d)
        self.recency = nn.Embedding(c.max_len, d) if c.positions else None
        self.behaviours = [(None if v is None else torch.tensor(v, dtype=torch.long)) for v in behaviours.values()]
        self.sequence = nn.Embedding(len(behaviours) + 1, d)  # row i: behaviour i; last row: the start token
        self.compress = (
            nn.ModuleList(
                QueryFormer(
                    d, c.num_queries, c.heads, c.qf_layers, dropout=c.dropout, self_attention=c.qf_self_attention
                )
                for _ in behaviours
            )
            if c.query_former
            else None
        )
        self.ctx_norm, self.norm = nn.LayerNorm(d), nn.LayerNorm(d)
        self.bos, self.level = nn.Parameter(torch.randn(d) * 0.02), nn.Parameter(torch.randn(self.levels, d) * 0.02)
        self.blocks = nn.ModuleList(
            DecoderLayer(d, c.heads, None, c.ffn_dim, c.dropout, "gelu") for _ in range(c.layers)
        )
        if c.moe:  # the shared decoder layer calls `self.ffn(norm(x))`: swap its dense FFN for the sparse MoE
            for block in self.blocks:
                block.ffn = SparseMoE(
                    d,
                    c.expert_dim or c.ffn_dim,
                    c.experts,
                    c.top_k,
                    c.expert_activation,
                    c.shared_expert,
                    dispatch=c.moe_dispatch,
                )
        self.code_heads = nn.ModuleList(nn.Linear(d, size) for size in self.codebook_sizes)
        self.user_proj, self.item_proj = nn.Linear(d, d), nn.Linear(d, d)
        self.drop = nn.Dropout(c.dropout)
        for table in (self.codes, self.items, self.events, self.recency, self.sequence):
            if table is not None:  # small embeddings (as TIGER / GPT): the pre-LN residual stream starts small
                nn.init.normal_(table.weight, std=c.init_std)

    def item_tokens(self, codes: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
        """codes [..., C], items [...] -> [..., D] item representations."""
        x = self.codes(codes + self.offsets).sum(-2)
        return x + self.items(items) if self.items is not None else x

    def context(self, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        """-> tokens [B, 1 + N, D], mask [B, 1 + N]: a start token (never empty) + per behaviour M summaries
        (Query-Former) or the behaviour's own items (query_former=False)."""
        mask, events = batch["history_mask"], batch["history_events"]
        x = self.item_tokens(batch["history_codes"], batch["history_items"]) + self.events(events)
        if self.recency is not None:
            t = mask.shape[1]
            x = x + self.recency((t - 1 - torch.arange(t, device=x.device)).clamp(max=self.config.max_len - 1))
        b = x.shape[0]
        parts, masks = [self.sequence.weight[-1].expand(b, 1, -1)], [mask.new_ones(b, 1)]
        for i, codes in enumerate(self.behaviours):  # a handful of behaviours, each vectorised over users
            seq, m = pack(x, mask if codes is None else mask & torch.isin(events, codes.to(events.device)))
            if self.compress is not None:
                seq, m = self.compress[i](seq, m), mask.new_ones(b, self.config.num_queries)
            parts.append(seq + self.sequence.weight[i])
            masks.append(m)
        return self.drop(self.ctx_norm(torch.cat(parts, 1))), torch.cat(masks, 1)

    def _tokens(self, prefix: torch.Tensor, start: int) -> torch.Tensor:
        """Decoder inputs for positions start..l of prefix [R, l]: BOS, then code i-1 at position i."""
        r, l = prefix.shape
        bos = self.bos.expand(r, 1, -1)
        codes = self.codes(prefix + self.offsets[:l]) if l else bos[:, :0]
        return self.drop((torch.cat([bos, codes], 1) + self.level[: l + 1])[:, start:])

    def _decode(self, x: torch.Tensor, per_user: dict, past: list | None) -> tuple[torch.Tensor, list]:
        present = []
        for i, block in enumerate(self.blocks):
            x, kv = block(x, per_user["memory_kv"][i], per_user["memory_mask"], None if past is None else past[i])
            present.append(kv)
        return self.norm(x), present

    def begin(self, batch: dict[str, torch.Tensor]) -> DecodeState:
        ctx, mask = self.context(batch)  # keys / values projected once per user, shared by its beams
        memory_kv = [cast(DecoderLayer, b).memory_kv(ctx) for b in self.blocks]
        return {"per_user": {"memory_kv": memory_kv, "memory_mask": mask}, "past": None}

    def step(
        self, state: DecodeState, prefix: torch.Tensor, use_cache: bool = True
    ) -> tuple[torch.Tensor, DecodeState]:
        level = prefix.shape[1]
        past = state["past"] if use_cache else None
        hidden, present = self._decode(
            self._tokens(prefix, 0 if past is None else past[0][0].shape[2]), state["per_user"], past
        )
        log_probs = torch.log_softmax(self.code_heads[level](hidden[:, -1]).float(), -1)
        return log_probs, {"per_user": state["per_user"], "past": present if use_cache else None}

    def reorder(self, state: DecodeState, rows: torch.Tensor) -> DecodeState:
        """Only the self-attention cache follows the beams; the per-user memory stays [U, ...] (beam rows are
        grouped by user, which the shared DecoderLayer exploits)."""
        return {"per_user": state["per_user"], "past": reorder_state(state["past"], rows)}

    def loss(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        target, c = batch["target_codes"], self.config  # [B, C]
        hidden, _ = self._decode(self._tokens(target[:, :-1], 0), self.begin(batch)["per_user"], None)  # [B, C, D]
        ce = torch.stack([F.cross_entropy(head(hidden[:, l]), target[:, l]) for l, head in enumerate(self.code_heads)])
        out = {"ce": ce.mean()}
        loss = out["ce"]
        if c.moe:
            out["moe_aux"] = moe_aux_loss(self.blocks)
            loss = loss + c.aux_loss_weight * out["moe_aux"]
        if c.contrastive_weight > 0:
            items = batch["target_items"]
            user = F.normalize(self.user_proj(hidden[:, 0]), dim=-1)  # BOS: has seen the context only
            item = F.normalize(self.item_proj(self.item_tokens(target, items)), dim=-1)
            logits = user @ item.T / c.temperature
            eye = torch.eye(len(items), dtype=torch.bool, device=items.device)
            duplicate = (items[None, :] == items[:, None]) & ~eye  # the same item as another row's target
            out["contrastive"] = F.cross_entropy(
                logits.masked_fill(duplicate, float("-inf")), torch.arange(len(items), device=items.device)
            )
            loss = loss + c.contrastive_weight * out["contrastive"]
        return {"loss": loss, **out}


@register("retriever", "onemall", config=OneMallConfig)
class OneMallRetriever(GenerativeRetriever):
    """`behaviours` (config, or default_behaviours of the fitted dataset) is saved with the weights."""

    name = "onemall"
    config: OneMallConfig

    def __init__(self, config: OneMallConfig | None = None) -> None:
        super().__init__(config or OneMallConfig())
        self.behaviours = self.config.behaviours

    def fit(self, dataset: Dataset) -> OneMallRetriever:
        self.behaviours = self.config.behaviours or default_behaviours(dataset, self.config.event_labels)
        return cast(OneMallRetriever, super().fit(dataset))  # fit returns self

    def build_model(self, shape: ModelShape) -> OneMall:
        return OneMall(self.config, shape, resolve_behaviours(self.behaviours, self.event_names))

    def save_state(self, path: Path) -> dict:  # pairs: JSON may sort a mapping's keys, the order matters
        return {**super().save_state(path), "behaviours": [[k, v] for k, v in (self.behaviours or {}).items()]}

    def load_state(self, path: Path, meta: dict) -> None:
        self.behaviours = dict(meta["behaviours"]) if meta.get("behaviours") else self.config.behaviours
        super().load_state(path, meta)
