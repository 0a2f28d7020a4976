"""OnePiece ranker ("onepiece"): context engineering + block-wise latent reasoning (Shopee, arXiv 2509.18091).

Mechanism (METHODS §2.3, ranking form): one token sequence per candidate group,
IH (history items, Proj_shared + learned positions) ⊕ PA (preference-anchor groups, each wrapped in
learned BOS/EOS, in-group positions, Proj_shared) ⊕ SD (user token, scenario token, request-time
token, own positions) ⊕ CIS (the group's C candidates, Proj_cand, NO positions, mutually visible);
a bidirectional pre-LN Transformer; K block-wise reasoning steps (nn/reasoning.py: the C candidate
outputs are fed back as a block + reasoning position embedding, block-causal mask); progressive
multi-task supervision (step k's candidate states -> task towers of a deeper task per step);
loss = sum over steps and their tasks of pointwise BCE + set-wise contrastive loss over the group
(ranking/setwise.py, which also says how groups are formed for impression vs positive-only logs).
Scores of a task come from the deepest step that supervises it.

Our interpretations [I] (each a flag):
- anchors: "events" = one group per behaviour in `anchor_events` (default every event label, e.g.
  clicked / long-viewed / liked / purchased): the `anchor_size` most recent events of the history
  window whose deepest behaviour is at least that one (from the "history_event" input; empty groups
  are masked); "categories" = the `anchor_categories` favourite categories (most frequent
  `anchor_column` value in the history window) -> their most popular train items; "auto" = events
  when the data has event labels, else categories, else none. IH uses the last `history_tokens`.
- SD: the scenario plays the query token; `request_time_token` adds hour-of-day + weekday of the
  request. IH adds a behaviour embedding (`event_embedding`) and a log2-minutes time-gap bucket
  (`time_buckets`, 0 = off) when those inputs are present.
- `feedback_norm`: the fed-back block is the final-LayerNorm output.
- `task_order` (None: impression < view/click < long_view < like/cart < purchase/order, unknown
  names in the middle) and `supervision`: "progressive" = state s of the S supervised states trains the
  tasks t with floor(t * S / T) == s (a state left without one takes task floor(s * T / S)); "last" =
  every task on the last step only (the paper's "multitask-on-last" ablation). `supervise_base`: the
  base pass counts as the first supervised state (S = K + 1), else only the K reasoning steps do.
- `setwise_denominator` ("all" candidates of the group, as stated, or "negatives" only),
  `setwise_temperature`, `setwise_weight`; `candidates_visible=False` = the ablation where candidates
  see only the context; serving groups = a hash-ordered split of each request (setwise.py).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal, cast

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from recstack.errors import ConfigError
from recstack.nn.embedding import id_embedding
from recstack.nn.positional import LearnedPositionalEmbedding
from recstack.nn.reasoning import BlockReasoner
from recstack.ranking.base import Ranker, RankerConfig, RankingModel
from recstack.ranking.features import FeatureEncoder, FeatureSchema, build_schema
from recstack.ranking.heads import TaskTowers
from recstack.ranking.setwise import (
    context_key,
    group_grid,
    hash_order,
    request_order,
    setwise_contrastive_loss,
    setwise_train_source,
)
from recstack.registry import register
from recstack.train import CallableBatchSource

DEPTH = {
    "impression": 0,
    "view": 1,
    "click": 1,
    "long_view": 2,
    "like": 3,
    "cart": 3,
    "add_to_cart": 3,
    "purchase": 4,
    "order": 4,
}
CONTEXT_KEYS = ("users", "history", "scenario", "history_event", "history_time", "request_time")


@dataclass
class OnePieceConfig(RankerConfig):
    dim: int = 32
    layers: int = 2
    heads: int = 2
    ffn_mult: int = 2
    dropout: float = 0.0
    reasoning_steps: int = 2  # K in 0..3
    group_size: int = 12  # C: candidates encoded together (block size M = C)
    candidates_visible: bool = True
    supervision: Literal["progressive", "last"] = "progressive"
    supervise_base: bool = True  # the base pass is step 0 of the supervision (else steps 1..K only)
    task_order: list[str] | None = None
    setwise_weight: float = 1.0
    setwise_temperature: float = 1.0
    setwise_denominator: Literal["all", "negatives"] = "all"
    history_tokens: int | None = None  # IH length (last n of the history window); None = max_history
    anchors: Literal["auto", "events", "categories", "none"] = "auto"
    anchor_events: list[str] | None = None  # None = every event label (samples.event_labels)
    anchor_categories: int = 3
    anchor_column: str | None = None  # None = the first categorical item column
    anchor_size: int = 8
    event_embedding: bool = True
    time_buckets: int = 16
    request_time_token: bool = True
    feedback_norm: bool = True
    kv_cache: bool = True  # reasoning steps run only the new block (same outputs as re-encoding)
    tower_hidden: list[int] = field(default_factory=lambda: [32])

    def __post_init__(self) -> None:
        checks = {
            "dim": self.dim > 0 and self.dim % max(self.heads, 1) == 0,
            "layers": self.layers > 0,
            "heads": self.heads > 0,
            "ffn_mult": self.ffn_mult > 0,
            "reasoning_steps": 0 <= self.reasoning_steps <= 3,
            "group_size": self.group_size > 0,
            "anchor_size": self.anchor_size > 0,
            "anchor_categories": self.anchor_categories > 0,
            "time_buckets": self.time_buckets >= 0,
            "setwise_temperature": self.setwise_temperature > 0,
            "setwise_weight": self.setwise_weight >= 0,
            "supervision": self.supervision in ("progressive", "last"),
            "setwise_denominator": self.setwise_denominator in ("all", "negatives"),
            "anchors": self.anchors in ("auto", "events", "categories", "none"),
            "history_tokens": self.history_tokens is None or self.history_tokens > 0,
        }
        bad = [key for key, ok in checks.items() if not ok]
        if bad:
            raise ConfigError(
                f"onepiece: invalid {bad[0]} = {getattr(self, bad[0])!r} (dim divisible by heads, "
                "reasoning_steps in 0..3, sizes > 0, supervision progressive|last)"
            )
        if self.aggregate_users:
            raise ConfigError("onepiece: aggregate_users is not supported; onepiece forms its own set-wise groups")


def step_tasks(tasks: list[str], steps: int, supervision: str, supervise_base: bool = True) -> list[list[str]]:
    """Tasks (shallow -> deep) supervising each of `steps` states (base pass + K steps; module docstring)."""
    if not supervise_base and steps > 1:
        return [[]] + step_tasks(tasks, steps - 1, supervision)
    t = len(tasks)
    if supervision == "last":
        return [[] for _ in range(steps - 1)] + [list(tasks)]
    out = [[tasks[i] for i in range(t) if i * steps // t == s] for s in range(steps)]
    return [chosen or [tasks[s * t // steps]] for s, chosen in enumerate(out)]


def last_members(history: torch.Tensor, member: torch.Tensor, size: int) -> torch.Tensor:
    """history [G, T] right-aligned ids, member [G, A, T] bool -> [G, A, size]: the `size` most recent
    members of each group, right-aligned (0 = padding)."""
    rank = member.flip(-1).long().cumsum(-1).flip(-1)  # members at positions >= t
    keep = member & (rank <= size)
    slot = torch.where(keep, size - rank, torch.full_like(rank, size))  # slot `size` collects the rest (zeros)
    out = history.new_zeros(*member.shape[:2], size + 1)
    return out.scatter_(2, slot, history.unsqueeze(1) * keep)[..., :size]


class OnePiece(RankingModel):
    """inputs: users, items [N]; history [N, T]; optional scenario, history_event, history_time,
    request_time, setwise_group [N] (rows of one candidate group) -> {task: logits [N]}."""

    anchor_codes: torch.Tensor  # buffers
    item_category: torch.Tensor
    category_top: torch.Tensor

    def __init__(
        self,
        features: FeatureEncoder,
        tasks: list[str],
        config: OnePieceConfig,
        max_history: int,
        anchor_codes: list[int],
        num_categories: int,
    ) -> None:
        super().__init__(features, tasks, config.task_weights)
        c, d, item_dim = config, config.dim, features.item_dim
        self.cfg, self.size = c, c.anchor_size
        self.shared, self.cand = nn.Linear(item_dim, d), nn.Linear(item_dim, d)  # Proj_shared, Proj_cand
        self.user = nn.Linear(features.user_dim, d)
        self.scenario = nn.Linear(features.scenario.embedding_dim, d) if features.scenario is not None else None
        self.hour, self.weekday = id_embedding(25, d), id_embedding(8, d)
        self.ih_len = min(c.history_tokens or max_history, max_history)
        self.ih_pos = LearnedPositionalEmbedding(self.ih_len, d)
        self.event = id_embedding(16, d) if c.event_embedding else None
        self.gap = id_embedding(c.time_buckets + 1, d) if c.time_buckets else None
        self.register_buffer("anchor_codes", torch.tensor(anchor_codes, dtype=torch.long), persistent=False)
        self.num_anchors = (
            len(anchor_codes) if anchor_codes else (min(c.anchor_categories, num_categories) if num_categories else 0)
        )
        self.register_buffer("item_category", torch.zeros(features.num_items + 1, dtype=torch.long))
        self.register_buffer("category_top", torch.zeros(num_categories + 1, self.size, dtype=torch.long))
        self.pa_pos = nn.Parameter(torch.randn(self.size, d) * 0.02)
        self.pa_marks = nn.Parameter(torch.randn(max(self.num_anchors, 1), 2, d) * 0.02)  # BOS / EOS per group
        self.sd_pos = nn.Parameter(torch.randn(3, d) * 0.02)
        self.reasoner = BlockReasoner(
            d, c.layers, c.heads, c.ffn_mult * d, c.reasoning_steps, c.dropout, c.feedback_norm, c.kv_cache
        )
        order = c.task_order or sorted(tasks, key=lambda t: DEPTH.get(t, 2.5))
        if sorted(order) != sorted(tasks):
            raise ConfigError(f"task_order {order} must list every task once: {', '.join(tasks)}")
        self.step_tasks = step_tasks(order, c.reasoning_steps + 1, c.supervision, c.supervise_base)
        self.heads = nn.ModuleList(TaskTowers(ts, d, c.tower_hidden) for ts in self.step_tasks)
        self.serve_step = {t: max(s for s, ts in enumerate(self.step_tasks) if t in ts) for t in tasks}

    # ---- structured context ---------------------------------------------------------------------------
    def _anchor_items(self, ctx: dict[str, torch.Tensor]) -> torch.Tensor:
        """[G, A, S] preference-anchor item ids (0 = padding)."""
        history = ctx["history"]
        g, a = history.shape[0], self.num_anchors
        if len(self.anchor_codes):
            events = ctx.get("history_event")
            if events is None:
                return history.new_zeros(g, a, self.size)
            member = (events.unsqueeze(1) >= self.anchor_codes.view(1, a, 1)) & (history > 0).unsqueeze(1)
            return last_members(history, member, self.size)
        if a == 0:
            return history.new_zeros(g, 0, self.size)
        cats = self.item_category[history.clamp(0, self.features.num_items)]
        counts = torch.zeros(g, self.category_top.shape[0], device=history.device)
        counts = counts.scatter_add_(1, cats, (history > 0).float())
        counts[:, 0] = 0.0  # no category
        top_count, top = counts.topk(a, dim=1)
        return self.category_top[top].masked_fill((top_count <= 0).unsqueeze(-1), 0)

    def _tokens(self, ctx: dict[str, torch.Tensor], items: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Per group: IH ⊕ PA ⊕ SD ⊕ CIS tokens [G, L, D] and their validity [G, L]; items [G, C]."""
        history = ctx["history"].masked_fill(ctx["history"] > self.features.num_items, 0)
        ih = history[:, -self.ih_len :]
        anchors = self._anchor_items({**ctx, "history": history})
        g, a, s = anchors.shape
        ids = torch.cat([ih, anchors.flatten(1), items], 1)
        vectors = self.features.item_vectors(ids)  # one pass over the distinct ids of all three
        ih_vec, pa_vec, cand_vec = vectors.split([ih.shape[1], a * s, items.shape[1]], 1)
        ih_valid = ih > 0
        ih_tok = self.shared(ih_vec) + self.ih_pos(ih_valid)
        if self.event is not None and ctx.get("history_event") is not None:
            ih_tok = ih_tok + self.event(ctx["history_event"][:, -self.ih_len :].clamp(0, 15))
        if self.gap is not None and ctx.get("history_time") is not None:
            minutes = ctx["history_time"][:, -self.ih_len :].float().clamp(min=0) / 60.0
            ih_tok = ih_tok + self.gap(
                (torch.log2(1.0 + minutes).long() + 1).clamp(max=self.cfg.time_buckets) * ih_valid
            )
        pa_tok = self.shared(pa_vec).view(g, a, s, self.cfg.dim) + self.pa_pos
        marks = self.pa_marks[:a].unsqueeze(0).expand(g, a, 2, -1)
        pa_tok = torch.cat([marks[:, :, :1], pa_tok, marks[:, :, 1:]], 2).flatten(1, 2)
        pa_items = anchors > 0
        group_valid = pa_items.any(-1, keepdim=True)
        pa_valid = torch.cat([group_valid, pa_items, group_valid], 2).flatten(1)
        users = ctx["users"]
        sd = [self.user(self.features.user_vectors(users, ctx.get("scenario")))]
        sd_valid = [torch.ones(g, dtype=torch.bool, device=ids.device)]
        scenario = ctx.get("scenario")
        if self.scenario is not None:
            assert self.features.scenario is not None  # self.scenario is built on the scenario embedding
            codes = (
                scenario.clamp(0, self.features.scenario.num_embeddings - 1)
                if scenario is not None
                else torch.zeros_like(users)
            )
            sd.append(self.scenario(self.features.scenario(codes)))
            sd_valid.append(codes > 0)
        if self.cfg.request_time_token:
            seconds = ctx.get("request_time")
            on = seconds is not None
            seconds = seconds.double() if seconds is not None else torch.zeros(g, dtype=torch.double, device=ids.device)
            hour, day = (seconds // 3600 % 24).long() + 1, (seconds // 86400 % 7).long() + 1
            sd.append(self.hour(hour * on) + self.weekday(day * on))
            sd_valid.append(torch.full((g,), on, dtype=torch.bool, device=ids.device))
        sd_tok = torch.stack(sd, 1) + self.sd_pos[: len(sd)]
        tokens = torch.cat([ih_tok, pa_tok, sd_tok, self.cand(cand_vec)], 1)
        return tokens, torch.cat([ih_valid, pa_valid, torch.stack(sd_valid, 1), items > 0], 1)

    # ---- groups, reasoning, heads -----------------------------------------------------------------
    def step_logits(self, inputs: dict[str, Any]) -> tuple[torch.Tensor, list[dict[str, torch.Tensor]]]:
        """(grid [G, C] row indices, -1 = empty; per step {task: logits [G, C]} of its supervised tasks)."""
        users, items = inputs["users"], inputs["items"]
        if inputs.get("setwise_group") is not None:
            grid = group_grid(inputs["setwise_group"], self.cfg.group_size)
        else:
            grid = group_grid(context_key(inputs), self.cfg.group_size, hash_order(users, items))
        valid, rows = grid >= 0, grid.clamp(min=0)
        lead = rows[:, 0]  # every row of a group shares the context: read it from the first
        ctx = {k: inputs[k][lead] for k in CONTEXT_KEYS if inputs.get(k) is not None}
        cand = items[rows].masked_fill(~valid, 0)
        tokens, token_valid = self._tokens(ctx, cand)
        m = cand.shape[1]
        slots = None
        if not self.cfg.candidates_visible:
            slots = torch.arange(-(tokens.shape[1] - m), m, device=cand.device).clamp(min=-1)  # context -1, then 0..m-1
        states = self.reasoner(tokens, token_valid, token_valid[:, -m:], slots)
        out = []
        for state, head in zip(states, self.heads):
            logits = head(state.reshape(-1, state.shape[-1])) if head.tasks else {}
            out.append({t: z.view(-1, m) for t, z in logits.items()})
        return grid, out

    def forward(self, inputs: dict[str, Any]) -> dict[str, torch.Tensor]:
        grid, steps = self.step_logits(inputs)
        valid = grid >= 0
        flat = {}
        for task in self.tasks:
            z = steps[self.serve_step[task]][task]
            flat[task] = z.new_zeros(inputs["items"].shape[0]).index_put((grid[valid],), z[valid])
        return flat

    def loss(self, inputs: dict[str, Any]) -> dict[str, torch.Tensor]:
        """sum over steps s and their tasks t of w_t * (BCE + setwise_weight * SCL); entries "<t>@<s>" (BCE)."""
        grid, steps = self.step_logits(inputs)
        valid, rows = grid >= 0, grid.clamp(min=0)
        out: dict[str, torch.Tensor] = {}
        total = torch.zeros((), device=grid.device)
        for s, logits in enumerate(steps):
            for task, z in logits.items():
                y = inputs["labels"][task][rows].float()
                bce = F.binary_cross_entropy_with_logits(z[valid].float(), y[valid])
                scl = setwise_contrastive_loss(z, y, valid, self.cfg.setwise_temperature, self.cfg.setwise_denominator)
                total = total + self.task_weights.get(task, 1.0) * (bce + self.cfg.setwise_weight * scl)
                out[f"{task}@{s}"], out[f"setwise_{task}@{s}"] = bce.detach(), scl.detach()
        out["loss"] = total
        return out


@register("ranker", "onepiece", config=OnePieceConfig)
class OnePieceRanker(Ranker):
    name = "onepiece"
    config_class = OnePieceConfig
    config: OnePieceConfig
    _dataset = None  # set during fit: category anchors read their tables from it

    def fit(self, dataset, candidates=None) -> OnePieceRanker:
        self._dataset = dataset
        try:
            return cast(OnePieceRanker, super().fit(dataset, candidates))  # fit returns self
        finally:
            self._dataset = None

    def _anchor_mode(self, schema: FeatureSchema) -> str:
        mode = self.config.anchors
        if mode == "auto":
            mode = "events" if self.event_labels else ("categories" if schema.item_columns else "none")
        return mode

    def build_model(self, schema: FeatureSchema) -> OnePiece:
        cfg, mode = self.config, self._anchor_mode(schema)
        codes, num_categories, column = [], 0, None
        if mode == "events":
            names = cfg.anchor_events if cfg.anchor_events is not None else self.event_labels
            unknown = [n for n in names if n not in self.event_labels]
            if unknown:
                raise ConfigError(
                    f"anchor_events: {unknown[0]!r} is not an event label; available: "
                    f"{', '.join(self.event_labels) or '(none: set anchors: categories or none)'}"
                )
            codes = [2 + self.event_labels.index(n) for n in names]  # history_event codes (ranking/samples.py)
        elif mode == "categories":
            column = cfg.anchor_column or (schema.item_columns[0] if schema.item_columns else None)
            if column not in schema.item_columns:
                raise ConfigError(
                    f"anchor_column: {column!r} is not a categorical item column; available: "
                    f"{', '.join(schema.item_columns) or '(none)'}"
                )
            num_categories = len(schema.item_vocab[schema.item_columns.index(column)])
        model = OnePiece(
            FeatureEncoder(schema, cfg.features), self.tasks, cfg, cfg.samples.max_history, codes, num_categories
        )
        if column is not None and self._dataset is not None:
            self._fill_category_tables(model, schema, column)
        return model

    def _fill_category_tables(self, model: OnePiece, schema: FeatureSchema, column: str) -> None:
        """item -> its first `column` token + 1 (0 = none); category -> its most popular train items."""
        dataset = self._dataset
        assert dataset is not None  # called during fit only
        _, tables = build_schema(dataset, self.config.features)
        table = tables.item_tokens[schema.item_columns.index(column)].tokens
        lengths = table.lengths()
        category = (
            torch.where(lengths > 0, table.values[table.offsets[:-1].clamp(max=max(len(table.values) - 1, 0))] + 1, 0)
            if len(table.values)
            else torch.zeros_like(lengths)
        )
        popularity = dataset.item_popularity("train").numpy()
        cats = category.numpy()
        order = np.lexsort((-popularity, cats))
        order = order[cats[order] > 0]
        starts = np.searchsorted(cats[order], cats[order], side="left")
        rank = np.arange(len(order)) - starts
        keep = rank < model.size
        model.item_category.copy_(category.long())
        model.category_top[torch.from_numpy(cats[order][keep]), torch.from_numpy(rank[keep])] = torch.from_numpy(
            order[keep]
        ).long()

    def _train_source(self, builder, train, candidates) -> CallableBatchSource:
        cfg = self.config
        return setwise_train_source(
            builder, train, candidates, cfg.group_size, cfg.samples.max_history, cfg.train.batch_size, cfg.train.seed
        )

    def evaluate_samples(self, samples):
        # Rows of one request next to each other, so a chunk of score_rows keeps its groups whole.
        return super().evaluate_samples(samples.select(request_order(samples)))
