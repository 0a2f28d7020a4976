"""Causal language models behind one interface (local Hugging Face model, OpenAI-compatible server),
prompt builders and LoRA adapters. `recstack.llm.local` (transformers) is imported on first use."""

from recstack.llm.base import Generation, GenerationConfig, LanguageModel, Prompt
from recstack.llm.config import LLMConfig, load_llm
from recstack.llm.lora import LoraSettings

__all__ = ["Generation", "GenerationConfig", "LLMConfig", "LanguageModel", "LoraSettings", "Prompt", "load_llm"]
