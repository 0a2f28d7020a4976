"""CAPTS trigger selection: VAM look-ahead labels -> CATR -> routed triggers (METHODS.md §2.5).

Paper: "CAPTS: Channel-Aware, Preference-Aligned Trigger Selection for U2I2I retrieval", Zhou et al.
(Kuaishou), arXiv 2602.12564. No code; every choice below that the summary does not state is a flag:

- labels: `vam_threshold` (binary label = found future engagement >= threshold), `continuous` value for
  the calibrator (on: Poisson NLL on the found engagement; off: calibrate to the binary label);
- scoring: `uniqueness_bonus` β in ṽ·(1 + β·u);
- routing: `routing` "greedy" | "exact", `overlap_penalty` (see routing.py), and `route` = False for the
  ablation where each channel independently takes its top triggers by its own value head.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from recstack.errors import ConfigError
from recstack.registry import register
from recstack.retrieval.triggers.catr import CATR, CATRConfig, fit_catr
from recstack.retrieval.triggers.episodes import TriggerEpisodes
from recstack.retrieval.triggers.routing import route_exact, route_greedy
from recstack.retrieval.triggers.selectors import SelectorContext, TriggerSelector, top_triggers_per_channel
from recstack.retrieval.triggers.vam import channel_overlap, vam_labels


@dataclass
class CaptsConfig:
    catr: CATRConfig = field(default_factory=CATRConfig)
    vam_threshold: float = 1.0
    continuous: bool = True
    uniqueness_bonus: float = 1.0
    routing: str = "greedy"  # "greedy" | "exact"
    overlap_penalty: float = 1.0
    route: bool = True

    def __post_init__(self) -> None:
        if self.routing not in ("greedy", "exact"):
            raise ConfigError(f"capts.routing: {self.routing!r} is not one of 'greedy', 'exact'")
        if self.uniqueness_bonus < 0 or self.overlap_penalty < 0:
            raise ConfigError("capts: uniqueness_bonus and overlap_penalty must be >= 0")


@register("trigger_selector", "capts", config=CaptsConfig)
class CaptsSelector(TriggerSelector):
    name = "capts"
    learned = True

    def __init__(self, config: CaptsConfig | None = None) -> None:
        self.config = config or CaptsConfig()
        self.model: CATR | None = None
        self.overlap: torch.Tensor | None = None  # [C, C] expansion overlap of channels

    def fit(self, context: SelectorContext) -> None:
        episodes = context.episodes
        labels = vam_labels(episodes, context.expansions, self.config.vam_threshold)
        self.overlap = channel_overlap(context.expansions)
        torch.manual_seed(self.config.catr.seed)
        self.model = CATR(
            self.config.catr, context.item_features, len(context.expansions), episodes.candidates.shape[1]
        )
        value = labels.value if self.config.continuous else labels.label
        losses = fit_catr(
            self.model, episodes.candidates, episodes.feedback, labels.label, value, labels.unique, context.progress
        )
        context.report.update(
            {"vam": labels.stats, "catr_losses": [round(x, 5) for x in losses], "overlap": self.overlap.tolist()}
        )

    def _values(self, episodes: TriggerEpisodes) -> tuple[torch.Tensor, torch.Tensor]:
        """Calibrated value ṽ [B, M, C] (expected future engagement found) and uniqueness u [B, M, C]."""
        if self.model is None:
            raise ConfigError("capts: fit the selector first")
        with torch.no_grad():
            value_logits, unique_logits = self.model(episodes.candidates, episodes.feedback)
            return self.model.calibrated(value_logits), torch.sigmoid(unique_logits)

    def select(self, episodes: TriggerEpisodes, quotas: torch.Tensor, routable: torch.Tensor) -> torch.Tensor:
        return self.select_weighted(episodes, quotas, routable)[0]

    def select_weighted(
        self, episodes: TriggerEpisodes, quotas: torch.Tensor, routable: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Routed triggers, weighted by ṽ so that a stronger trigger counts more in its expansion."""
        value, unique = self._values(episodes)
        scores = (value * (1 + self.config.uniqueness_bonus * unique)).masked_fill(~routable, float("-inf"))
        if not self.config.route:  # ablation: every channel takes its own top triggers, uncoordinated
            return top_triggers_per_channel(scores, quotas, routable), value
        assert self.overlap is not None
        route = route_exact if self.config.routing == "exact" else route_greedy
        return route(scores, quotas, self.overlap, self.config.overlap_penalty) & routable, value

    def state(self) -> tuple[dict[str, torch.Tensor], dict]:
        if self.model is None or self.overlap is None:
            raise ConfigError("capts: nothing to save; fit the selector first")
        tensors = {f"model.{k}": v for k, v in self.model.state_dict().items()}
        tensors["overlap"] = self.overlap
        meta = {"max_candidates": self.model.age_embedding.num_embeddings, "channels": self.overlap.shape[0]}
        return tensors, meta

    def load(self, tensors: dict[str, torch.Tensor], meta: dict) -> None:
        weights = {k.removeprefix("model."): v for k, v in tensors.items() if k.startswith("model.")}
        self.model = CATR(
            self.config.catr, weights["item_features"], int(meta["channels"]), int(meta["max_candidates"])
        )
        self.model.load_state_dict(weights)
        self.model.eval()
        self.overlap = tensors["overlap"]
