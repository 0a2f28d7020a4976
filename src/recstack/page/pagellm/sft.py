"""PageLLM's supervised stage: the policy learns to write each request's target page (pairs.target_pages),
teacher-forced; and greedy page writing in bounded chunks (shared by fitting and serving)."""

from __future__ import annotations

import torch

from recstack.page.pagellm.backbones import AnyPagePolicy
from recstack.page.pagellm.config import PageLLMConfig
from recstack.page.pagellm.context import PageContext
from recstack.page.pagellm.pairs import target_pages
from recstack.progress import progress_bar


def train_sft(policy: AnyPagePolicy, context: PageContext, c: PageLLMConfig, generator: torch.Generator) -> list[float]:
    """Teacher-forced negative log-likelihood of the target pages; mean per page, per epoch."""
    targets = target_pages(context, c.k)
    slot_weight = torch.ones(targets.shape, dtype=torch.float32)
    if c.sft_slots == "engaged":
        slot_weight = (context.engaged.gather(1, targets.clamp(min=0)) & (targets >= 0)).float()
    trained = torch.nonzero(slot_weight.sum(1) > 0).squeeze(1)
    trainable = [p for p in policy.parameters() if p.requires_grad]  # an LLM backbone: LoRA + SID tokens
    optimizer = torch.optim.AdamW(trainable, lr=c.sft_lr, weight_decay=1e-4)
    losses = []
    policy.train()
    for _ in progress_bar(range(c.sft_epochs), desc="pagellm sft", leave=False):
        order = trained[torch.randperm(trained.numel(), generator=generator)]
        total = 0.0
        for start in range(0, order.numel(), c.batch_size):
            rows = order[start : start + c.batch_size]
            log_probs = policy.evaluate(context.select(rows), targets[rows])[0]
            loss = -(log_probs * slot_weight[rows]).sum(1).mean()
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            total += loss.item() * rows.numel()
        losses.append(total / max(order.numel(), 1))
    policy.eval()
    return [losses[0], losses[-1]] if losses else []


def generate_in_chunks(policy: AnyPagePolicy, context: PageContext, rows: int) -> torch.Tensor:
    """Greedy pages [B, k] written `rows` requests at a time (bounds an LLM backbone's memory)."""
    with torch.no_grad():
        parts = [
            policy.generate(context.select(torch.arange(start, min(start + rows, len(context)))), greedy=True)
            for start in range(0, len(context), rows)
        ]
    return torch.cat(parts) if parts else torch.empty(0, policy.slots, dtype=torch.long)
