"""Local backend: a Hugging Face causal LM (+ peft LoRA) in this process; CUDA when present, CPU otherwise.

Generation is batched with left padding and the KV cache (HF `generate`), sampling with temperature /
top-p / top-k, stop strings, seeded with a forked RNG. Scoring puts each prompt left-padded against a
common boundary and its completion right-padded after it, so token t of every completion sits at the
same position; logits are computed for the completion positions only (`logits_to_keep`).

Our interpretations [I]: a chat prompt for a tokenizer without a chat template is rendered as
"role: content" lines ending in "assistant:"; plain-text prompts get the tokenizer's special tokens
(BOS), rendered chat text none (the template writes them); an empty prompt is scored after BOS (or EOS).
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch
from torch import nn

from recstack.errors import ConfigError
from recstack.llm.base import Generation, GenerationConfig, LanguageModel, Prompt, check_pairs, cut_at_stop
from recstack.llm.config import LLMConfig
from recstack.llm.lora import LoraSettings, add_lora, load_adapter, merge_adapter, save_adapter
from recstack.registry import register

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def resolve_device(device: str) -> torch.device:
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


@register("llm", "local", config=LLMConfig)
class LocalLM(LanguageModel):
    """`model`: a HF causal LM (maybe peft-wrapped); `tokenizer`: its (fast) tokenizer."""

    def __init__(
        self, model: Any, tokenizer: Any, name: str = "local", context_window: int | None = None, device: str = "auto"
    ) -> None:
        super().__init__()
        self.device = resolve_device(device)
        self.model = model.to(self.device).eval()
        self.tokenizer = tokenizer
        self.name = name
        window = context_window or getattr(model.config, "max_position_embeddings", None) or 2048
        self.context_window = int(window)
        if tokenizer.pad_token_id is None:
            tokenizer.pad_token = tokenizer.eos_token
        self.pad_id = int(tokenizer.pad_token_id)
        eos = {tokenizer.eos_token_id}
        model_eos = getattr(getattr(model, "generation_config", None), "eos_token_id", None)
        eos.update(model_eos if isinstance(model_eos, list) else [model_eos])
        self.eos_ids = sorted(int(e) for e in eos if e is not None)
        self.score_batch_size = 8  # pairs per forward pass in continuation_logprobs

    @classmethod
    def from_config(cls, config: LLMConfig) -> LocalLM:
        from recstack.llm.loading import load_local

        return load_local(config)

    # ---- text -> tokens ------------------------------------------------------------------------
    def render(self, prompt: Prompt, add_generation_prompt: bool = True) -> str:
        """The prompt as the model reads it: chat messages through the chat template, generation prompt added."""
        if isinstance(prompt, str):
            return prompt
        if getattr(self.tokenizer, "chat_template", None):
            text = self.tokenizer.apply_chat_template(
                prompt, tokenize=False, add_generation_prompt=add_generation_prompt
            )
            return str(text)
        return "".join(f"{m['role']}: {m['content']}\n" for m in prompt) + (
            "assistant:" if add_generation_prompt else ""
        )

    def encode_prompt(self, prompt: Prompt, add_generation_prompt: bool = True) -> list[int]:
        text = self.render(prompt, add_generation_prompt)
        ids = self.tokenizer(text, add_special_tokens=isinstance(prompt, str))["input_ids"]
        if not ids:
            start = self.tokenizer.bos_token_id if self.tokenizer.bos_token_id is not None else self.eos_ids[0]
            ids = [int(start)]
        return list(ids)

    def encode_text(self, text: str) -> list[int]:
        return list(self.tokenizer(text, add_special_tokens=False)["input_ids"])

    def count_tokens(self, text: str) -> int:
        return len(self.encode_text(text))

    def _cut_left(self, ids: list[int], budget: int) -> tuple[list[int], int]:
        """Keep the last `budget` tokens (and a leading BOS); returns (ids, tokens cut)."""
        if len(ids) <= budget:
            return ids, 0
        bos = self.tokenizer.bos_token_id
        head = ids[:1] if bos is not None and ids[0] == bos and budget > 1 else []
        kept = head + ids[len(ids) - (budget - len(head)) :]
        return kept, len(ids) - len(kept)

    # ---- generation ----------------------------------------------------------------------------
    @contextmanager
    def _seeded(self, seed: int | None) -> Iterator[None]:
        if seed is None:
            yield
            return
        devices = [self.device.index or 0] if self.device.type == "cuda" else []
        with torch.random.fork_rng(devices=devices):
            torch.manual_seed(seed)
            yield

    def _hf_generation_config(self, config: GenerationConfig) -> Any:
        from transformers import GenerationConfig as HFGenerationConfig

        options: dict[str, Any] = {"do_sample": False}
        if not config.greedy:
            options = {
                "do_sample": True,
                "temperature": config.temperature,
                "top_p": config.top_p,
                "top_k": config.top_k,
            }
        return HFGenerationConfig(
            max_new_tokens=config.max_new_tokens,
            num_return_sequences=1 if config.greedy else config.num_return_sequences,  # greedy: copies below
            pad_token_id=self.pad_id,
            eos_token_id=self.eos_ids,
            stop_strings=list(config.stop) or None,
            **options,
        )

    def left_pad(self, rows: Sequence[list[int]]) -> tuple[torch.Tensor, torch.Tensor]:
        """input_ids [B, L] and attention_mask [B, L], padded on the left, on the model's device."""
        width = max(len(r) for r in rows)
        ids = torch.full((len(rows), width), self.pad_id, dtype=torch.long)
        mask = torch.zeros((len(rows), width), dtype=torch.long)
        for b, row in enumerate(rows):
            ids[b, width - len(row) :] = torch.tensor(row, dtype=torch.long)
            mask[b, width - len(row) :] = 1
        return ids.to(self.device), mask.to(self.device)

    def generate(self, prompts: Sequence[Prompt], config: GenerationConfig | None = None) -> list[list[Generation]]:
        return self.generate_tokens([self.encode_prompt(p) for p in prompts], config)

    @torch.no_grad()
    def generate_tokens(
        self, rows: Sequence[list[int]], config: GenerationConfig | None = None
    ) -> list[list[Generation]]:
        """`generate` for prompts already tokenized (what the HTTP server receives); same truncation rules."""
        config = config or GenerationConfig()
        budget = self.context_window - config.max_new_tokens
        if budget <= 0:
            raise ConfigError(
                f"max_new_tokens={config.max_new_tokens} leaves no room for a prompt in the "
                f"{self.context_window}-token context window of {self.name}"
            )
        encoded = [self._cut_left(list(r), budget) for r in rows]
        order = sorted(range(len(rows)), key=lambda i: -len(encoded[i][0]))  # similar lengths share a batch
        hf_config = self._hf_generation_config(config)
        n = 1 if config.greedy else config.num_return_sequences
        results: list[list[Generation]] = [[] for _ in rows]
        with self._seeded(config.seed):
            for start in range(0, len(order), config.batch_size):
                chunk = order[start : start + config.batch_size]
                ids, mask = self.left_pad([encoded[i][0] for i in chunk])
                out = self.model.generate(
                    input_ids=ids, attention_mask=mask, generation_config=hf_config, tokenizer=self.tokenizer
                )
                new = out[:, ids.shape[1] :].cpu()
                for row in range(new.shape[0]):
                    i = chunk[row // n]
                    results[i].append(self._finish(new[row].tolist(), encoded[i], config))
        if config.greedy and config.num_return_sequences > 1:  # every greedy sample is the same
            results = [gens * config.num_return_sequences for gens in results]
        return results

    def _finish(self, tokens: list[int], prompt: tuple[list[int], int], config: GenerationConfig) -> Generation:
        ended = next((k for k, t in enumerate(tokens) if t in self.eos_ids), None)
        length = ended + 1 if ended is not None else len(tokens)
        if ended is None and self.pad_id not in self.eos_ids:
            while length > 0 and tokens[length - 1] == self.pad_id:  # a row finished early by a stop string
                length -= 1
        text = self.tokenizer.decode(tokens[:length], skip_special_tokens=True)
        text, stopped = cut_at_stop(text, config.stop)
        self._count(len(prompt[0]), length, prompt[1])
        return Generation(
            text=text,
            prompt_tokens=len(prompt[0]),
            completion_tokens=length,
            prompt_truncated=prompt[1] > 0,
            finish_reason="stop" if stopped or ended is not None else "length",
        )

    # ---- scoring -------------------------------------------------------------------------------
    def _pair_ids(self, prompt: Prompt, completion: str, add_eos: bool) -> tuple[list[int], list[int]]:
        completion_ids = self.encode_text(completion) + ([self.eos_ids[0]] if add_eos else [])
        self.stats["continuations_scored"] += 1
        if len(completion_ids) > self.context_window - 1:
            self.stats["continuations_truncated"] += 1
            completion_ids = completion_ids[: self.context_window - 1]
        prompt_ids, cut = self._cut_left(self.encode_prompt(prompt), self.context_window - len(completion_ids))
        self._count(len(prompt_ids), 0, cut)
        return prompt_ids, completion_ids

    def _score(self, pairs: Sequence[tuple[list[int], list[int]]]) -> tuple[torch.Tensor, torch.Tensor]:
        prompt_len = max(len(p) for p, _ in pairs)
        steps = max(1, max(len(c) for _, c in pairs))
        ids = torch.full((len(pairs), prompt_len + steps), self.pad_id, dtype=torch.long)
        mask = torch.zeros_like(ids)
        for b, (p, c) in enumerate(pairs):
            ids[b, prompt_len - len(p) : prompt_len + len(c)] = torch.tensor(p + c, dtype=torch.long)
            mask[b, prompt_len - len(p) : prompt_len + len(c)] = 1
        ids, mask = ids.to(self.device), mask.to(self.device)
        positions = (mask.cumsum(-1) - 1).clamp(min=0)
        out = self.model(input_ids=ids, attention_mask=mask, position_ids=positions, logits_to_keep=steps + 1)
        logits = out.logits[:, :-1].float()  # [B, T, V]: position prompt_len - 1 + t predicts completion token t
        target = ids[:, prompt_len:]
        logprobs = logits.gather(-1, target.unsqueeze(-1)).squeeze(-1) - logits.logsumexp(-1)
        completion_mask = mask[:, prompt_len:].to(logprobs.dtype)
        return logprobs * completion_mask, completion_mask

    def sequence_logprobs(
        self, prompts: Sequence[Prompt], completions: Sequence[str], add_eos: bool = False
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """WITH autograd: token log-probs [B, T] of each completion after its prompt (T = longest completion,
        0 past its end) and mask [B, T] (1 on completion tokens), on the model's device. `add_eos` appends the
        end-of-sequence token to each completion (SFT that teaches the model to stop)."""
        check_pairs(prompts, completions)
        return self._score([self._pair_ids(p, c, add_eos) for p, c in zip(prompts, completions)])

    @torch.no_grad()
    def continuation_logprobs(self, prompts: Sequence[Prompt], continuations: Sequence[str]) -> list[torch.Tensor]:
        check_pairs(prompts, continuations)
        return self._score_batched([self._pair_ids(p, c, add_eos=False) for p, c in zip(prompts, continuations)])

    @torch.no_grad()
    def token_logprobs(self, rows: Sequence[list[int]]) -> list[torch.Tensor]:
        """Log-probability of every token but the first of each token row (echo of a prompt), no grad;
        rows longer than the context window keep their last `context_window` tokens."""
        pairs = []
        for row in rows:
            kept, cut = self._cut_left(list(row), self.context_window)
            self._count(len(kept), 0, cut)
            pairs.append((kept[:1], kept[1:]))
        return self._score_batched(pairs)

    def _score_batched(self, pairs: Sequence[tuple[list[int], list[int]]]) -> list[torch.Tensor]:
        order = sorted(range(len(pairs)), key=lambda i: -(len(pairs[i][0]) + len(pairs[i][1])))
        out: list[torch.Tensor] = [torch.empty(0)] * len(pairs)
        for start in range(0, len(order), self.score_batch_size):
            chunk = order[start : start + self.score_batch_size]
            logprobs, _ = self._score([pairs[i] for i in chunk])
            for row, i in enumerate(chunk):
                out[i] = logprobs[row, : len(pairs[i][1])].float().cpu()
        return out

    # ---- LoRA ----------------------------------------------------------------------------------
    def add_lora(self, config: LoraSettings | None = None) -> None:
        """Wrap the model with a fresh LoRA adapter; only its weights stay trainable."""
        self.model = add_lora(self.model, config or LoraSettings())

    def save_adapter(self, path: str | os.PathLike[str]) -> Path:
        """The LoRA adapter as `path/adapter_model.safetensors` + `adapter_config.json`, written atomically."""
        return save_adapter(self.model, path)

    def load_adapter(self, path: str | os.PathLike[str], trainable: bool = False) -> None:
        self.model = load_adapter(self.model, path, trainable).to(self.device)

    def merge_adapter(self) -> None:
        """Fold the LoRA weights into the base model (faster inference; no adapter left to train)."""
        self.model = merge_adapter(self.model)

    def trainable_parameters(self) -> list[nn.Parameter]:
        return [p for p in self.model.parameters() if p.requires_grad]
