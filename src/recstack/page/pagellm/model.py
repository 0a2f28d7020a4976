"""PageLLM's networks: item tokens, the page policy (a decoder that writes the page), shared by the
reward models in rewards.py.

Items are spelt by their semantic ID (item_space.py): an item's vector is the sum of one embedding per
code level, the way an LLM with added SID tokens reads them. The policy is an encoder-decoder
(nn/transformer.py): the encoder reads the user token, the last H history items and the candidate pool
(item tokens + candidate features: ranker probabilities, channel evidence, fused score); the decoder
writes the page slot by slot, and slot t's item is chosen among the pool by a pointer over the encoded
candidates. [I] The paper's LLM emits an item as its SID tokens under a candidate trie; pointing at the
candidate whose whole SID it would emit is that decoding with the trie collapsed into one step per
item, so "an item's last token" is its slot (where item rewards are credited).

Shapes: B requests, N pool size, H history length, T page slots so far, D model width.
"""

from __future__ import annotations

from typing import cast

import torch
from torch import nn

from recstack.nn.mlp import MLP
from recstack.nn.transformer import DecoderLayer, EncoderLayer
from recstack.page.pagellm.config import PageModelConfig
from recstack.page.pagellm.context import PageContext


class PageTokens(nn.Module):
    """Token vectors for items (by semantic ID), pool candidates (+ features) and history."""

    def __init__(self, codes: torch.Tensor, vocab: list[int], feature_dim: int, dim: int) -> None:
        super().__init__()
        self.codes: torch.Tensor
        self.register_buffer("codes", codes.long(), persistent=True)  # [num_items + 1, levels]
        self.levels = nn.ModuleList(nn.Embedding(size, dim) for size in vocab)
        self.features = MLP(feature_dim, [dim], dim, activation="gelu")
        self.kinds = nn.Embedding(3, dim)  # 0 user, 1 history item, 2 candidate

    def item(self, items: torch.Tensor) -> torch.Tensor:
        """items [...] -> [..., D]; item 0 gives zeros (padding)."""
        codes = self.codes[items.long()]
        vector = sum(table(codes[..., level]) for level, table in enumerate(self.levels))
        return torch.as_tensor(vector) * (items > 0).unsqueeze(-1)

    def candidates(self, context: PageContext) -> torch.Tensor:
        """[B, N, D]"""
        return self.item(context.items) + self.features(context.features) + self.kinds.weight[2]

    def context(self, context: PageContext) -> tuple[torch.Tensor, torch.Tensor]:
        """User + history tokens [B, 1 + H, D] and their mask [B, 1 + H] (True = real)."""
        b = len(context)
        user = self.kinds.weight[0].expand(b, 1, -1)
        history = self.item(context.history) + self.kinds.weight[1]
        mask = torch.cat([torch.ones(b, 1, dtype=torch.bool), context.history > 0], dim=1)
        return torch.cat([user, history], dim=1), mask


class PagePolicy(nn.Module):
    """pi(page | user, pool): log-probabilities, values and sampling of pages of `slots` items."""

    def __init__(self, codes: torch.Tensor, vocab: list[int], feature_dim: int, slots: int, config: PageModelConfig):
        super().__init__()
        d = config.dim
        self.slots, self.vocab, self.feature_dim = slots, list(vocab), feature_dim
        self.tokens = PageTokens(codes, vocab, feature_dim, d)
        self.encoder = nn.ModuleList(
            EncoderLayer(d, config.heads, None, 4 * d, config.dropout, "gelu") for _ in range(config.layers)
        )
        self.decoder = nn.ModuleList(
            DecoderLayer(d, config.heads, None, 4 * d, config.dropout, "gelu") for _ in range(config.layers)
        )
        self.slot_embedding = nn.Embedding(slots + 1, d)  # position 0 = begin-of-page
        self.pointer = nn.Linear(d, d)
        self.value_head = nn.Linear(d, 1)
        self.norm = nn.LayerNorm(d)

    @property
    def codes(self) -> torch.Tensor:
        """[num_items + 1, C] the semantic IDs the policy spells items with."""
        return self.tokens.codes

    def encode(self, context: PageContext) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """-> memory [B, S, D], memory mask [B, S], encoded candidates [B, N, D] (S = 1 + H + N)."""
        head, head_mask = self.tokens.context(context)
        memory = torch.cat([head, self.tokens.candidates(context)], dim=1)
        mask = torch.cat([head_mask, context.valid], dim=1)
        for layer in self.encoder:
            memory = layer(memory, mask.unsqueeze(1))
        return memory, mask, memory[:, head.shape[1] :]

    def decode(self, encoded: tuple[torch.Tensor, torch.Tensor, torch.Tensor], page: torch.Tensor) -> torch.Tensor:
        """page [B, T] pool columns chosen so far -> decoder states [B, T + 1, D] (state t picks slot t)."""
        memory, mask, cands = encoded
        b, t = page.shape
        chosen = cands.gather(1, page.clamp(min=0).unsqueeze(2).expand(-1, -1, cands.shape[2]))
        x = torch.cat([torch.zeros(b, 1, cands.shape[2]), chosen], dim=1) + self.slot_embedding.weight[: t + 1]
        for layer in self.decoder:
            x, _ = layer(x, cast(DecoderLayer, layer).memory_kv(memory), mask)
        return self.norm(x)

    def logits(self, states: torch.Tensor, cands: torch.Tensor, blocked: torch.Tensor) -> torch.Tensor:
        """states [B, T, D], cands [B, N, D], blocked [B, T, N] -> masked pointer logits [B, T, N]."""
        scores = self.pointer(states) @ cands.transpose(1, 2) / cands.shape[2] ** 0.5
        return scores.masked_fill(blocked, float("-inf"))

    def evaluate(self, context: PageContext, page: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Teacher-forced page [B, k] -> (log pi(slot item) [B, k], entropy [B, k], value [B, k])."""
        encoded = self.encode(context)
        states = self.decode(encoded, page[:, :-1])
        live = page >= 0  # -1: the request's pool ran out before this slot
        blocked = blocked_before(page, context.valid) & live.unsqueeze(2)
        log_probs = torch.log_softmax(self.logits(states, encoded[2], blocked), dim=2)
        picked = log_probs.gather(2, page.clamp(min=0).unsqueeze(2)).squeeze(2) * live
        probs = log_probs.exp()
        entropy = -(probs * log_probs.masked_fill(probs == 0, 0.0)).sum(2) * live
        return picked, entropy, self.value_head(states).squeeze(2)

    @torch.no_grad()
    def generate(self, context: PageContext, greedy: bool, generator: torch.Generator | None = None) -> torch.Tensor:
        """A page [B, k] of distinct pool columns (-1 where a request's pool runs out)."""
        encoded = self.encode(context)
        b = len(context)
        page = torch.empty(b, 0, dtype=torch.long)
        blocked = ~context.valid
        for _ in range(self.slots):
            states = self.decode(encoded, page)[:, -1:]
            logits = self.logits(states, encoded[2], blocked.unsqueeze(1)).squeeze(1)
            empty = torch.isinf(logits).all(1)
            logits = logits.masked_fill(empty.unsqueeze(1), 0.0)
            if greedy:
                pick = logits.argmax(1)
            else:
                pick = torch.multinomial(torch.softmax(logits, 1), 1, generator=generator).squeeze(1)
            blocked = blocked | torch.nn.functional.one_hot(pick, blocked.shape[1]).bool()
            page = torch.cat([page, torch.where(empty, -1, pick).unsqueeze(1)], dim=1)
        return page


def blocked_before(page: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    """[B, k, N]: at slot t, pool columns that are empty or already on the page in slots < t."""
    b, k = page.shape
    taken = torch.zeros(b, k, valid.shape[1], dtype=torch.bool)
    onehot = torch.nn.functional.one_hot(page.clamp(min=0), valid.shape[1]).bool() & (page >= 0).unsqueeze(2)
    taken[:, 1:] = onehot.cumsum(1)[:, :-1] > 0
    return taken | ~valid.unsqueeze(1)
