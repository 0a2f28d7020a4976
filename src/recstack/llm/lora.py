"""LoRA adapters over a Hugging Face causal LM (peft): add, save (safetensors, atomic), load, merge.

An adapter folder is peft's own format — `adapter_config.json` + `adapter_model.safetensors` — so
peft, vLLM (`--lora-modules`) and llama.cpp's converters read it too. It is written into a temporary
sibling folder and renamed into place: a crash leaves the previous adapter intact, never a partial one.
"""

from __future__ import annotations

import os
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from recstack.errors import ConfigError, DataError

LLAMA_LINEAR = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


@dataclass
class LoraSettings:
    r: int = 8
    alpha: float = 16.0  # scale = alpha / r
    dropout: float = 0.0
    target_modules: list[str] = field(default_factory=lambda: list(LLAMA_LINEAR))  # module names to adapt
    init: str = "default"  # peft's init_lora_weights: "default" (B = 0, the adapter starts as the identity), "gaussian"

    def __post_init__(self) -> None:
        if self.r <= 0:
            raise ConfigError(f"lora r must be > 0, got {self.r}")
        if not 0 <= self.dropout < 1:
            raise ConfigError(f"lora dropout must be in [0, 1), got {self.dropout}")
        if not self.target_modules:
            raise ConfigError("lora target_modules must name at least one module")


def _peft() -> Any:
    try:
        import peft
    except ImportError as exc:
        raise ConfigError("LoRA needs peft: pip install 'recstack[llm]'") from exc
    return peft


def is_peft(model: Any) -> bool:
    return hasattr(model, "peft_config")


def add_lora(model: Any, settings: LoraSettings) -> Any:
    peft = _peft()
    if is_peft(model):
        raise ConfigError("the model already has a LoRA adapter: merge_adapter() it first, or load a saved one")
    config = peft.LoraConfig(
        r=settings.r,
        lora_alpha=settings.alpha,
        lora_dropout=settings.dropout,
        target_modules=list(settings.target_modules),
        init_lora_weights=True if settings.init == "default" else settings.init,
        task_type="CAUSAL_LM",
    )
    try:
        with warnings.catch_warnings():  # peft 0.21 calls a transformers 5 method deprecated in favour of another
            warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing", category=FutureWarning)
            return peft.get_peft_model(model, config)
    except ValueError as exc:  # e.g. no module matches target_modules
        raise ConfigError(f"lora target_modules {settings.target_modules}: {exc}") from exc


def save_adapter(model: Any, path: str | os.PathLike[str]) -> Path:
    from recstack.train.checkpoint import atomic_dir

    if not is_peft(model):
        raise ConfigError("no LoRA adapter to save: call add_lora() or load_adapter() first")
    target = Path(path)
    with atomic_dir(target) as tmp:
        model.save_pretrained(str(tmp), safe_serialization=True)
        (tmp / "README.md").unlink(missing_ok=True)  # peft's model-card stub
    return target


def load_adapter(model: Any, path: str | os.PathLike[str], trainable: bool = False) -> Any:
    peft = _peft()
    folder = Path(path)
    if not (folder / "adapter_config.json").is_file() or not (folder / "adapter_model.safetensors").is_file():
        raise DataError(f"no LoRA adapter at {folder} (needs adapter_config.json + adapter_model.safetensors)")
    if is_peft(model):
        model = model.unload()  # drop the current adapter, unmerged: the new one replaces it
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing", category=FutureWarning)
            return peft.PeftModel.from_pretrained(model, str(folder), is_trainable=trainable)
    except (ValueError, KeyError, RuntimeError) as exc:
        raise DataError(f"LoRA adapter at {folder} does not fit this model: {exc}") from exc


def merge_adapter(model: Any) -> Any:
    if not is_peft(model):
        raise ConfigError("no LoRA adapter to merge")
    return model.merge_and_unload()
