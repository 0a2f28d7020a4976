"""The pipeline's language models: which one a stage gets, and letting it go when the stage ends.

A whole run (reason -> filter -> sft -> popo -> features) in one process ran out of memory on a
24 GB machine. A finished stage's model could outlive it: Hugging Face models hold reference cycles,
so only the cyclic collector frees them, whenever it happens to run, and the CUDA caching allocator
keeps freed blocks. So a stage keeps its models in locals only, and `releases_models` collects them
when it ends, empties the CUDA cache and drops what the pipeline itself cached (the sentence model the
embedder loaded): two stages never hold models at once. On an error it also clears the stage's frames
in the traceback, since a notebook keeps the last traceback (and so the failed stage's model) alive
while the next stage loads its own; post-mortem debugging then sees those frames without locals. A
cleared frame still holds its function, so per-part work reaches the model through bound methods or
functools.partial, never through a closure over it (chains.py, inference.py).
"""

from __future__ import annotations

import functools
import gc
import json
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any, Concatenate, ParamSpec, Protocol, TypeVar

import torch

from recstack.errors import ConfigError, DataError

P = ParamSpec("P")
R = TypeVar("R")


class HoldsModels(Protocol):
    def release_models(self) -> None: ...


S = TypeVar("S", bound=HoldsModels)


def release_memory() -> None:
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def releases_models(method: Callable[Concatenate[S, P], R]) -> Callable[Concatenate[S, P], R]:
    """Wrap a stage so that whatever models it loaded are gone when it returns or raises."""

    @functools.wraps(method)
    def stage(self: S, /, *args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return method(self, *args, **kwargs)
        except BaseException as exc:
            traceback.clear_frames(exc.__traceback__)
            raise
        finally:
            self.release_models()

    return stage


def adapter_path(work: Path, stage: str) -> Path:
    path = work / stage / "adapter"
    if not (path / "adapter_config.json").is_file():
        raise DataError(f"no adapter of stage {stage!r} at {path}; run `recstack llm {stage.split('-')[0]}` first")
    return path


def load_stage_model(
    factory: Callable[[dict[str, Any]], Any], spec: dict[str, Any], work: Path, stage: str | None = None
) -> Any:
    """The model of `spec` with the adapters of `stage` (None/"base", "sft", "sft-all", "popo-<name>")."""
    model = factory(dict(spec))
    if stage in (None, "base"):
        return model
    if not hasattr(model, "load_adapter"):
        raise ConfigError(f"stage {stage!r} needs a local student model to load its LoRA adapter into")
    if stage.startswith("popo-"):  # POPO trained a fresh LoRA on top of its base stage's merged adapter
        base = json.loads((work / stage / "base.json").read_text())["base"]
        if base not in (None, "base"):
            model.load_adapter(adapter_path(work, base))
            model.merge_adapter()
    model.load_adapter(adapter_path(work, stage))
    return model
