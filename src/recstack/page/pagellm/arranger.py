"""PageLLM as the cascade's page stage: `page: {name: pagellm}` (METHODS.md §2.2, arXiv 2506.09084).

fit (on the valid split, after the ranker):
  1. the fused page's channel weights are tuned as for `fused` (its order defines the candidate pool);
  2. item vectors and semantic IDs from the train rows (item_space.py);
  3. SFT: the policy learns to write each request's target page (pairs.target_pages);
  4. preference pairs in the four families -> page reward model (all families) and item reward model
     (relevance + ranking), both Bradley-Terry; pair accuracy on 10% held-out pairs is reported;
  5. PPO from the SFT policy with R = alpha * R_page + (1 - alpha) * sum_k w_k r_item(i_k, k), KL to SFT.
arrange: greedy decoding of the page from the pool, then every other candidate in fused order.
Every interpretation is a PageLLMConfig field ([I] in its docstring); the backbone is a small
encoder-decoder ([I]; the paper fine-tunes an LLM).
"""

from __future__ import annotations

import copy
import time
from pathlib import Path
from typing import Any

import torch

from recstack.data.batch import Page
from recstack.errors import DataError
from recstack.page.base import PageInputs, page_order
from recstack.page.fused import FusedPage
from recstack.page.item_space import item_space
from recstack.page.pagellm.backbones import AnyPagePolicy, build_policy, load_policy, save_policy
from recstack.page.pagellm.config import PageLLMConfig
from recstack.page.pagellm.context import PageContext, build_context
from recstack.page.pagellm.pairs import PreferencePairs, build_pairs
from recstack.page.pagellm.ppo import ppo_train
from recstack.page.pagellm.rewards import (
    ItemRewardModel,
    MixedReward,
    PageRewardModel,
    PageScore,
    pair_accuracy,
    position_weights,
    train_bradley_terry,
)
from recstack.page.pagellm.sft import generate_in_chunks, train_sft
from recstack.progress import progress_bar
from recstack.registry import register


@register("page", "pagellm", config=PageLLMConfig)
class PageLLMPage(FusedPage):
    name = "pagellm"
    learned = True
    config: PageLLMConfig

    def __init__(self, config: PageLLMConfig | None = None) -> None:
        super().__init__(config or PageLLMConfig())
        self.policy: AnyPagePolicy | None = None

    def context(self, inputs: PageInputs) -> tuple[PageContext, torch.Tensor]:
        """(PageContext of the pool, fused scores [B, K] of every candidate)."""
        fused = self.fused_scores(inputs)
        return build_context(inputs, fused, self.config.pool, self.config.model.history_len), fused

    def fit(self, inputs: PageInputs) -> dict[str, Any]:
        c = self.config
        if inputs.dataset is None or inputs.targets is None:
            raise DataError("page pagellm: fitting needs the training dataset and held-out targets")
        started = time.perf_counter()
        report: dict[str, Any] = {"fused": super().fit(inputs)}
        torch.manual_seed(c.seed)
        generator = torch.Generator().manual_seed(c.seed)
        space = item_space(inputs.dataset, c.item_space)
        context, _ = self.context(inputs)
        report["requests"] = len(context)
        report["requests_engaged_in_pool"] = int(context.engaged.any(1).sum())
        features = context.features.shape[2]
        policy = build_policy(c, space.codes, space.vocab, features)
        report["sft_loss"] = train_sft(policy, context, c, generator)
        reference = copy.deepcopy(policy).eval().requires_grad_(False)

        pairs = build_pairs(context, space.codes, c.k, c.families, c.pairs_per_family, generator)
        report["pairs"] = pairs.counts()
        held = torch.rand(pairs.rows.numel(), generator=generator) < 0.1
        train, test = pairs.subset(~held), pairs.subset(held)
        weights = position_weights(c.k, c.position_weights)
        page_model = PageRewardModel(space.codes, space.vocab, features, c.k, c.model)
        item_model = ItemRewardModel(space.codes, space.vocab, features, c.k, c.model)
        report["page_reward"] = self._fit_reward(page_model, page_model, context, train, test, generator)
        item_families = [f for f in ("relevance", "ranking") if f in c.families]

        def item_score(ctx: PageContext, page: torch.Tensor) -> torch.Tensor:
            return item_model(ctx, page, weights)

        report["item_reward"] = self._fit_reward(
            item_model, item_score, context, train.of(item_families), test.of(item_families), generator
        )
        if c.ppo.steps > 0 and (c.page_reward or c.item_reward):
            reward = self._mixed_reward(policy, context, page_model, item_model, weights)
            bar = progress_bar(total=c.ppo.steps, desc="pagellm ppo", leave=False)
            history = ppo_train(policy, reference, context, reward, c.ppo, generator, on_step=lambda _: bar.update())
            bar.close()
            report["ppo"] = {
                "reward_first": history[0]["reward"],
                "reward_last": history[-1]["reward"],
                "kl_last": history[-1]["kl"],
                "seconds_per_step": sum(h["seconds"] for h in history) / len(history),
            }
        self.policy = policy.eval()
        report["seconds"] = round(time.perf_counter() - started, 2)
        return report

    def _fit_reward(
        self,
        model: torch.nn.Module,
        score: PageScore,
        context: PageContext,
        train: PreferencePairs,
        test: PreferencePairs,
        generator: torch.Generator,
    ) -> dict[str, Any]:
        c = self.config
        model.train()
        losses = train_bradley_terry(
            score, list(model.parameters()), context, train.rows, train.better, train.worse,
            c.reward_epochs, c.reward_lr, c.batch_size, generator,
        )  # fmt: skip
        model.eval()
        return {
            "loss_first": losses[0] if losses else None,
            "loss_last": losses[-1] if losses else None,
            "train_pairs": int(train.rows.numel()),
            "heldout_pair_accuracy": pair_accuracy(score, context, test.rows, test.better, test.worse),
        }

    def _mixed_reward(
        self,
        policy: AnyPagePolicy,
        context: PageContext,
        page_model: PageRewardModel,
        item_model: ItemRewardModel,
        weights: torch.Tensor,
    ) -> MixedReward:
        c = self.config
        page_scale, item_scale = (0.0, 1.0), (0.0, 1.0)
        if c.normalise_rewards:  # units of each model's spread over the SFT policy's own pages
            pages = generate_in_chunks(policy, context, c.batch_size)
            with torch.no_grad():
                page_values = page_model(context, pages)
                item_values = item_model.item_rewards(context, pages)[pages >= 0]
            page_scale = (float(page_values.mean()), float(page_values.std().clamp(min=1e-6)))
            item_scale = (float(item_values.mean()), float(item_values.std().clamp(min=1e-6)))
        return MixedReward(
            page_model if c.page_reward else None,
            item_model.item_rewards if c.item_reward else None,
            c.alpha,
            weights,
            page_scale,
            item_scale,
        )

    def arrange(self, inputs: PageInputs, k: int) -> Page:
        if self.policy is None:
            raise DataError("page pagellm: arrange before fit (no policy)")
        context, fused = self.context(inputs)
        page = generate_in_chunks(self.policy, context, self.config.batch_size)
        first = torch.where(page >= 0, context.columns.gather(1, page.clamp(min=0)), -1)
        return page_order(inputs.candidates, fused, first)

    # ---- persistence ----------------------------------------------------------------------------
    def save_state(self, path: Path) -> dict[str, Any]:
        if self.policy is None:
            raise DataError("page pagellm: nothing to save before fit")
        return save_policy(self.policy, path)

    def load_state(self, path: Path, meta: dict[str, Any]) -> None:
        self.policy = load_policy(self.config, path, meta)
