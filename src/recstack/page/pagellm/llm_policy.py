"""PageLLM with a language model as the page policy (`backbone: llm`; the paper's setting, §2.2).

The LM (recstack.llm local backend: SmolLM2-135M-Instruct by default, any causal LM folder, or "tiny")
gets LoRA on its linear layers and one added token per semantic-ID code and level. The added tokens live
in their own table: their input vectors feed the LM as `inputs_embeds`, and the LM's last hidden state
scores them (output = hidden @ table.T), so the base vocabulary's head is never computed. Prompt, the
same length for every request (empty slots are a <no item> token):

    "History:" h_1 ... h_H " Candidates:" c_1 ... c_N " Page:"      (each item = its C code tokens)

and the page is written as k items × C code tokens, every token constrained to the codes of pool items
that are still free and match the item's codes so far (the candidate trie), so a page never repeats an
item. Same interface as PagePolicy (evaluate / generate over pool columns), so SFT and PPO are shared:
an item's log-probability is the sum over its C tokens, its value is read before its first token.
[I] The candidate order in the prompt is the fused order; the LM sees no ranker scores as numbers.

Shapes: B requests, N pool, H history, k slots, C codes per item, T tokens.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from recstack.page.pagellm.context import PageContext


class LLMPagePolicy(nn.Module):
    def __init__(self, llm: Any, codes: torch.Tensor, vocab: list[int], slots: int) -> None:
        """llm: a LocalLM whose model already carries its LoRA adapter (LocalLM.add_lora)."""
        super().__init__()
        self.llm, self.slots, self.vocab = llm, slots, list(vocab)
        self.lm = llm.model  # registered: its LoRA weights train with the rest
        self.codes: torch.Tensor
        self.register_buffer("codes", codes.long(), persistent=True)  # [num_items + 1, C]
        self.offsets: torch.Tensor
        self.register_buffer("offsets", torch.tensor([0, *vocab[:-1]]).cumsum(0), persistent=False)
        base = self.lm.get_input_embeddings()
        hidden = base.weight.shape[1]
        self.no_item = sum(vocab)
        self.cache_key = "past_key_values"
        self.sid_tokens = nn.Embedding(sum(vocab) + 1, hidden)
        nn.init.normal_(self.sid_tokens.weight, std=float(base.weight.std()))
        self.value_head = nn.Linear(hidden, 1)
        tokenizer = llm.tokenizer
        self.text = {
            name: torch.tensor(tokenizer(text, add_special_tokens=False)["input_ids"], dtype=torch.long)
            for name, text in (("history", "History:"), ("candidates", " Candidates:"), ("page", " Page:"))
        }
        bos = tokenizer.bos_token_id if tokenizer.bos_token_id is not None else tokenizer.eos_token_id
        self.text["history"] = torch.cat([torch.tensor([bos]), self.text["history"]])

    @property
    def device(self) -> torch.device:
        return self.sid_tokens.weight.device

    # ---- tokens ---------------------------------------------------------------------------------
    def item_tokens(self, items: torch.Tensor) -> torch.Tensor:
        """items [B, M] -> added-token ids [B, M * C] (item 0 -> <no item> tokens)."""
        ids = self.codes[items.long()] + self.offsets  # [B, M, C]
        ids = torch.where((items > 0).unsqueeze(2), ids, self.no_item)
        return ids.flatten(1)

    def text_embeddings(self, name: str, rows: int) -> torch.Tensor:
        ids = self.text[name].to(self.device)
        return self.lm.get_input_embeddings()(ids).unsqueeze(0).expand(rows, -1, -1)

    def prompt(self, context: PageContext) -> torch.Tensor:
        """[B, P, hidden] input vectors of the prompt."""
        b = len(context)
        return torch.cat(
            [
                self.text_embeddings("history", b),
                self.sid_tokens(self.item_tokens(context.history)),
                self.text_embeddings("candidates", b),
                self.sid_tokens(self.item_tokens(context.items)),
                self.text_embeddings("page", b),
            ],
            dim=1,
        )

    def hidden(self, embeds: torch.Tensor, past: Any = None) -> tuple[torch.Tensor, Any]:
        """Last hidden states [B, T, D] of `embeds` after the cached `past`, and the extended cache.
        transformers >= 5.2x names the cache `cache` (earlier: `past_key_values`); both are accepted."""
        extra = {} if past is None else {self.cache_key: past}
        # The decoder body, not the LM head: only the last hidden state is needed (the added tokens are
        # scored by their own table), and every layer's states of a long prompt would not fit in memory.
        body = self.lm.get_base_model().model if hasattr(self.lm, "get_base_model") else self.lm.model
        out = body(inputs_embeds=embeds, use_cache=True, **extra)
        self.cache_key = "cache" if out.get("cache") is not None else "past_key_values"
        return out.last_hidden_state, out.get(self.cache_key)

    def token_logits(self, hidden: torch.Tensor, level: int) -> torch.Tensor:
        """hidden [..., D] -> logits over level `level`'s codes [..., vocab[level]]."""
        table = self.sid_tokens.weight[int(self.offsets[level]) : int(self.offsets[level]) + self.vocab[level]]
        return hidden @ table.T

    def allowed(self, context: PageContext, free: torch.Tensor, prefix: torch.Tensor, level: int) -> torch.Tensor:
        """[B, vocab[level]] codes a next token may take: level-`level` codes of free pool items whose
        codes before `level` equal prefix [B, level]; free [B, N] bool."""
        pool_codes = self.codes[context.items.long()]  # [B, N, C]
        match = free & (pool_codes[..., :level] == prefix.unsqueeze(1)).all(2)
        mask = torch.zeros(len(context), self.vocab[level], dtype=torch.bool, device=free.device)
        rows = torch.arange(len(context)).unsqueeze(1).expand_as(match)
        mask[rows[match], pool_codes[..., level][match]] = True
        return mask

    # ---- the PagePolicy interface ---------------------------------------------------------------
    def evaluate(self, context: PageContext, page: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Teacher-forced page [B, k] -> (log pi(item) [B, k], entropy [B, k], value [B, k])."""
        b, k = page.shape
        c = self.codes.shape[1]
        items = torch.where(page >= 0, context.items.gather(1, page.clamp(min=0)), 0)
        page_tokens = self.item_tokens(items)  # [B, k * C]
        prompt = self.prompt(context)
        hidden, _ = self.hidden(torch.cat([prompt, self.sid_tokens(page_tokens)], dim=1))
        # position p predicts token p + 1: page token j is predicted at prompt_len - 1 + j
        states = hidden[:, prompt.shape[1] - 1 : prompt.shape[1] - 1 + k * c].reshape(b, k, c, -1)
        codes = self.codes[items.long()]  # [B, k, C]
        free = context.valid.clone()
        log_probs = torch.zeros(b, k)
        entropy = torch.zeros(b, k)
        live = page >= 0
        for slot in range(k):
            for level in range(c):
                mask = self.allowed(context, free, codes[:, slot, :level], level) | ~live[:, slot : slot + 1]
                logits = self.token_logits(states[:, slot, level], level).masked_fill(~mask, float("-inf"))
                token_log_probs = torch.log_softmax(logits, dim=1)
                picked = token_log_probs.gather(1, codes[:, slot, level : level + 1]).squeeze(1)
                log_probs[:, slot] += torch.where(live[:, slot], picked, 0.0)
                probs = token_log_probs.exp()
                entropy[:, slot] += -(probs * token_log_probs.masked_fill(probs == 0, 0.0)).sum(1) * live[:, slot]
            free = free & ~(
                nn.functional.one_hot(page[:, slot].clamp(min=0), free.shape[1]).bool() & live[:, slot : slot + 1]
            )
        values = self.value_head(states[:, :, 0]).squeeze(2)
        return log_probs, entropy, values

    @torch.no_grad()
    def generate(self, context: PageContext, greedy: bool, generator: torch.Generator | None = None) -> torch.Tensor:
        """A page [B, k] of distinct pool columns (-1 where the pool runs out), decoded token by token."""
        b, n = context.items.shape
        c = self.codes.shape[1]
        pool_codes = self.codes[context.items.long()]
        hidden, past = self.hidden(self.prompt(context))
        state = hidden[:, -1]
        free = context.valid.clone()
        page = torch.full((b, self.slots), -1, dtype=torch.long)
        for slot in range(self.slots):
            prefix = torch.empty(b, 0, dtype=torch.long)
            empty = ~free.any(1)
            for level in range(c):
                mask = self.allowed(context, free, prefix, level) | empty.unsqueeze(1)
                logits = self.token_logits(state, level).masked_fill(~mask, float("-inf"))
                if greedy:
                    code = logits.argmax(1)
                else:
                    code = torch.multinomial(torch.softmax(logits, 1), 1, generator=generator).squeeze(1)
                prefix = torch.cat([prefix, code.unsqueeze(1)], dim=1)
                token = torch.where(empty, self.no_item, self.offsets[level] + code)
                hidden, past = self.hidden(self.sid_tokens(token).unsqueeze(1), past)
                state = hidden[:, -1]
            column = ((pool_codes == prefix.unsqueeze(1)).all(2) & free).float().argmax(1)
            page[:, slot] = torch.where(empty, -1, column)
            free = free & ~(nn.functional.one_hot(column, n).bool() & ~empty.unsqueeze(1))
        return page
