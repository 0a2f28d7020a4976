"""One interface for causal language models: generation, continuation log-probabilities, perplexity.

Backends (registry kind "llm"): `local` (a Hugging Face model in this process, llm/local.py) and
`openai` (any OpenAI-compatible HTTP server: vLLM, llama.cpp, ollama, `recstack llm serve`).

A prompt is plain text or a list of chat messages `[{"role": "user", "content": ...}]`; chat prompts go
through the model's chat template with the generation prompt added. Prompts longer than the context
window (minus `max_new_tokens` when generating) are cut from the LEFT — the most recent history and the
instruction at the end survive — flagged `prompt_truncated=True` and counted in `stats`; they never crash.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

from recstack.errors import ConfigError

Prompt = str | list[dict[str, str]]
"""plain text, or chat messages [{"role": "system" | "user" | "assistant", "content": ...}]"""


@dataclass
class GenerationConfig:
    max_new_tokens: int = 128
    temperature: float = 0.7  # 0 = greedy
    top_p: float = 0.95  # 1 = off
    top_k: int = 0  # 0 = off
    num_return_sequences: int = 1
    stop: list[str] = field(default_factory=list)  # text is cut at the first stop string (finish_reason "stop")
    seed: int | None = None  # None = the global torch RNG as it stands
    batch_size: int = 8  # prompts per forward batch (each with num_return_sequences rows)

    def __post_init__(self) -> None:
        if self.max_new_tokens <= 0:
            raise ConfigError(f"max_new_tokens must be > 0, got {self.max_new_tokens}")
        if self.temperature < 0:
            raise ConfigError(f"temperature must be >= 0, got {self.temperature}")
        if not 0 < self.top_p <= 1:
            raise ConfigError(f"top_p must be in (0, 1], got {self.top_p}")
        if self.top_k < 0:
            raise ConfigError(f"top_k must be >= 0, got {self.top_k}")
        if self.num_return_sequences <= 0:
            raise ConfigError(f"num_return_sequences must be > 0, got {self.num_return_sequences}")
        if self.batch_size <= 0:
            raise ConfigError(f"batch_size must be > 0, got {self.batch_size}")
        if any(not s for s in self.stop):
            raise ConfigError("stop strings must be non-empty")

    @property
    def greedy(self) -> bool:
        return self.temperature == 0


@dataclass
class Generation:
    text: str  # the completion only (prompt excluded), cut before the first stop string
    prompt_tokens: int  # after truncation
    completion_tokens: int
    prompt_truncated: bool
    finish_reason: str  # "stop" (end-of-sequence token or a stop string) | "length" (max_new_tokens reached)


def cut_at_stop(text: str, stop: Sequence[str]) -> tuple[str, bool]:
    """`text` up to the earliest stop string, and whether one was found."""
    cut = min((i for i in (text.find(s) for s in stop) if i >= 0), default=-1)
    return (text[:cut], True) if cut >= 0 else (text, False)


class LanguageModel(ABC):
    """A causal language model behind one interface; `stats` counts truncated prompts and tokens."""

    name: str
    context_window: int  # tokens, prompt + completion

    def __init__(self) -> None:
        self.stats: dict[str, Any] = {
            "prompts": 0,
            "prompts_truncated": 0,
            "prompt_tokens": 0,
            "completion_tokens": 0,
            "tokens_cut": 0,  # prompt tokens dropped by truncation
            "continuations_scored": 0,
            "continuations_truncated": 0,
        }

    @abstractmethod
    def generate(self, prompts: Sequence[Prompt], config: GenerationConfig | None = None) -> list[list[Generation]]:
        """One list per prompt, `config.num_return_sequences` Generations each."""

    @abstractmethod
    def continuation_logprobs(self, prompts: Sequence[Prompt], continuations: Sequence[str]) -> list[torch.Tensor]:
        """Per-token log-probabilities (1-D float tensor [len(continuation tokens)] per pair, on CPU) of
        `continuation` right after `prompt` (a chat prompt is rendered with its generation prompt). No grad."""

    @abstractmethod
    def count_tokens(self, text: str) -> int:
        """Tokens of `text` (no special tokens added)."""

    def perplexity(self, prompts: Sequence[Prompt], continuations: Sequence[str]) -> torch.Tensor:
        """[B] exp(-mean token logprob) of each continuation after its prompt; nan for an empty continuation."""
        logprobs = self.continuation_logprobs(prompts, continuations)
        return torch.tensor(
            [math.exp(-lp.double().mean().item()) if lp.numel() else math.nan for lp in logprobs], dtype=torch.float64
        )

    def _count(self, prompt_tokens: int, completion_tokens: int, cut: int) -> None:
        self.stats["prompts"] += 1
        self.stats["prompt_tokens"] += prompt_tokens
        self.stats["completion_tokens"] += completion_tokens
        if cut > 0:
            self.stats["prompts_truncated"] += 1
            self.stats["tokens_cut"] += cut


def check_pairs(prompts: Sequence[Prompt], continuations: Sequence[str]) -> None:
    if len(prompts) != len(continuations):
        raise ConfigError(f"{len(prompts)} prompts but {len(continuations)} continuations: they must pair up")
