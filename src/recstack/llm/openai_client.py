"""OpenAI-compatible HTTP backend: a model served by vLLM, llama.cpp, ollama or `recstack llm serve`, by URL.

    load_llm({"backend": "openai", "url": "http://127.0.0.1:8000/v1", "model": "served-name"})

Two modes, chosen by probing the server once:
  token mode (vLLM, recstack): the server's `/tokenize` turns text and chat messages into token ids; prompts
      are cut from the left to the context window here, generation and scoring go to `/v1/completions` with
      token ids, and continuation log-probabilities come from `echo` + `logprobs` over prompt + continuation
      tokenized separately — exactly what the local backend computes.
  text mode (servers without /tokenize: llama.cpp, ollama, OpenAI): text prompts go to `/v1/completions`,
      chat prompts to `/v1/chat/completions`; the server applies its own limits; continuation log-probabilities
      need `echo` (tokens starting at or after the end of the prompt text count; one straddling the boundary
      does not [I]) and work for text prompts only; `count_tokens` estimates 4 characters per token [I].
Requests for different prompts run concurrently (`batch_size` at a time). With n > 1 the usage's completion
tokens are split evenly over the choices [I]. Connection errors and 5xx answers are retried.
"""

from __future__ import annotations

import math
import os
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

import torch

from recstack.errors import ConfigError, DataError
from recstack.llm.base import Generation, GenerationConfig, LanguageModel, Prompt, check_pairs, cut_at_stop
from recstack.llm.config import LLMConfig
from recstack.registry import register

T = TypeVar("T")
DEFAULT_CONTEXT = 4096
SCORE_WORKERS = 8


@register("llm", "openai", config=LLMConfig)
class OpenAILM(LanguageModel):
    def __init__(
        self,
        url: str,
        model: str | None = None,
        api_key: str | None = None,
        context_window: int | None = None,
        timeout: float = 300.0,
        max_retries: int = 2,
        use_tokenize: bool | None = None,  # None = probe the server's /tokenize once
    ) -> None:
        super().__init__()
        try:
            import httpx
        except ImportError as exc:
            raise ConfigError("the openai LLM backend needs httpx: pip install 'recstack[llm]'") from exc
        url = url.rstrip("/")
        self.url = url
        self.v1 = url if url.endswith("/v1") else f"{url}/v1"
        self.root = self.v1[: -len("/v1")]
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self.http = httpx.Client(timeout=timeout, headers=headers)
        self.max_retries = max_retries
        self._model = model
        self._window = context_window
        self._use_tokenize = use_tokenize
        self._lock = threading.Lock()
        self._stats_lock = threading.Lock()  # requests run in threads

    @classmethod
    def from_config(cls, config: LLMConfig) -> OpenAILM:
        if not config.url:
            raise ConfigError("llm.url: the openai backend needs the server's URL, e.g. http://127.0.0.1:8000/v1")
        return cls(
            config.url,
            config.model,
            os.environ.get(config.api_key_env) or None,
            config.context_window,
            config.timeout,
            config.max_retries,
        )

    # ---- HTTP ----------------------------------------------------------------------------------
    def _call(self, method: str, url: str, body: dict[str, Any] | None = None, quiet: bool = False) -> Any:
        import httpx

        for attempt in range(self.max_retries + 1):
            try:
                response = self.http.request(method, url, json=body)
            except httpx.TransportError as exc:
                if attempt == self.max_retries:
                    raise ConfigError(f"llm.url: cannot reach {url}: {exc}") from exc
            else:
                if response.status_code < 500 or attempt == self.max_retries:
                    break
            time.sleep(0.5 * 2**attempt)
        if response.status_code >= 400:
            if quiet:
                return None
            raise DataError(f"{url}: HTTP {response.status_code}: {response.text[:500]}")
        return response.json()

    def _info(self) -> None:
        with self._lock:
            if self._model is not None and self._window is not None:
                return
            cards = (self._call("GET", f"{self.v1}/models") or {}).get("data") or []
            if self._model is None:
                if not cards:
                    raise DataError(f"{self.v1}/models lists no model; set llm.model")
                self._model = str(cards[0]["id"])
            if self._window is None:
                card = next((c for c in cards if c.get("id") == self._model), cards[0] if cards else {})
                self._window = int(card.get("max_model_len") or DEFAULT_CONTEXT)

    @property
    def name(self) -> str:  # type: ignore[override]
        self._info()
        return str(self._model)

    @property
    def context_window(self) -> int:  # type: ignore[override]
        self._info()
        return int(self._window or DEFAULT_CONTEXT)

    @property
    def token_mode(self) -> bool:
        if self._use_tokenize is None:
            probe = self._call("POST", f"{self.root}/tokenize", {"model": self.name, "prompt": "a"}, quiet=True)
            self._use_tokenize = isinstance(probe, dict) and "tokens" in probe
        return self._use_tokenize

    def _tokenize(self, prompt: Prompt, special: bool = True) -> list[int]:
        body: dict[str, Any] = {"model": self.name}
        if isinstance(prompt, str):
            body.update(prompt=prompt, add_special_tokens=special)
        else:
            body.update(messages=prompt, add_generation_prompt=True)
        return [int(t) for t in self._call("POST", f"{self.root}/tokenize", body)["tokens"]]

    def _count(self, prompt_tokens: int, completion_tokens: int, cut: int) -> None:
        with self._stats_lock:
            super()._count(prompt_tokens, completion_tokens, cut)

    def _tally(self, key: str) -> None:
        with self._stats_lock:
            self.stats[key] += 1

    def count_tokens(self, text: str) -> int:
        if self.token_mode:
            return len(self._tokenize(text, special=False))
        return math.ceil(len(text) / 4)

    def _parallel(self, fn: Callable[[int], T], count: int, workers: int) -> list[T]:
        if count <= 1 or workers <= 1:
            return [fn(i) for i in range(count)]
        with ThreadPoolExecutor(max_workers=min(workers, count)) as pool:
            return list(pool.map(fn, range(count)))

    # ---- generation ----------------------------------------------------------------------------
    def generate(self, prompts: Sequence[Prompt], config: GenerationConfig | None = None) -> list[list[Generation]]:
        config = config or GenerationConfig()
        token_mode = self.token_mode
        body: dict[str, Any] = {
            "model": self.name,
            "max_tokens": config.max_new_tokens,
            "temperature": config.temperature,
            "top_p": config.top_p,
            "n": config.num_return_sequences,
        }
        if config.top_k:
            body["top_k"] = config.top_k
        if config.stop:
            body["stop"] = list(config.stop)
        if config.seed is not None:
            body["seed"] = config.seed
        budget = self.context_window - config.max_new_tokens
        if token_mode and budget <= 0:
            raise ConfigError(
                f"max_new_tokens={config.max_new_tokens} leaves no room in the {self.context_window}-token window"
            )

        def one(i: int) -> list[Generation]:
            prompt, cut, request = prompts[i], 0, dict(body)
            if token_mode:
                ids = self._tokenize(prompt)
                cut = max(0, len(ids) - budget)
                request["prompt"] = ids[cut:]
                answer = self._call("POST", f"{self.v1}/completions", request)
            elif isinstance(prompt, str):
                answer = self._call("POST", f"{self.v1}/completions", {**request, "prompt": prompt})
            else:
                answer = self._call("POST", f"{self.v1}/chat/completions", {**request, "messages": prompt})
            return self._parse(answer, cut, config)

        return self._parallel(one, len(prompts), config.batch_size)

    def _parse(self, answer: dict[str, Any], cut: int, config: GenerationConfig) -> list[Generation]:
        choices = sorted(answer.get("choices") or [], key=lambda c: c.get("index", 0))
        usage = answer.get("usage") or {}
        prompt_tokens = int(usage.get("prompt_tokens", 0))
        completion = int(usage.get("completion_tokens", 0)) // max(1, len(choices))
        out = []
        for choice in choices:
            text = choice["message"]["content"] if "message" in choice else choice.get("text", "")
            text, stopped = cut_at_stop(text or "", config.stop)
            truncated = cut > 0 or bool(choice.get("prompt_truncated", False))
            self._count(prompt_tokens, completion, cut if cut else int(truncated))
            reason = "length" if choice.get("finish_reason") == "length" and not stopped else "stop"
            out.append(Generation(text, prompt_tokens, completion, truncated, reason))
        return out

    # ---- scoring -------------------------------------------------------------------------------
    def continuation_logprobs(self, prompts: Sequence[Prompt], continuations: Sequence[str]) -> list[torch.Tensor]:
        check_pairs(prompts, continuations)
        token_mode = self.token_mode
        echo = {"model": self.name, "max_tokens": 1, "temperature": 0, "echo": True, "logprobs": 0}

        def one(i: int) -> torch.Tensor:
            prompt, continuation = prompts[i], continuations[i]
            self._tally("continuations_scored")
            if token_mode:
                c = self._tokenize(continuation, special=False) if continuation else []
                if len(c) > self.context_window - 1:
                    self._tally("continuations_truncated")
                    c = c[: self.context_window - 1]
                p = self._tokenize(prompt)
                cut = max(0, len(p) - (self.context_window - len(c)))
                p = p[cut:]
                self._count(len(p), 0, cut)
                answer = self._call("POST", f"{self.v1}/completions", {**echo, "prompt": p + c})
                values = answer["choices"][0]["logprobs"]["token_logprobs"][len(p) : len(p) + len(c)]
            else:
                if not isinstance(prompt, str):
                    raise ConfigError(
                        f"{self.url}: continuation log-probabilities of chat prompts need a server with /tokenize "
                        "(vLLM, recstack llm serve); render the chat prompt to text first"
                    )
                answer = self._call("POST", f"{self.v1}/completions", {**echo, "prompt": prompt + continuation})
                logprobs = answer["choices"][0].get("logprobs") or {}
                if not logprobs.get("token_logprobs") or not logprobs.get("text_offset"):
                    raise ConfigError(f"{self.url}: the server returns no prompt log-probabilities (echo + logprobs)")
                end = len(prompt) + len(continuation)
                values = [
                    lp
                    for lp, offset in zip(logprobs["token_logprobs"], logprobs["text_offset"])
                    if len(prompt) <= offset < end
                ]
                self._count(0, 0, 0)
            return torch.tensor([float(v) for v in values], dtype=torch.float32)

        return self._parallel(one, len(prompts), SCORE_WORKERS)

    def close(self) -> None:
        self.http.close()
