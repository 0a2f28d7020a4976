"""Which network writes the page: the small encoder-decoder (`backbone: transformer`, default) or a
language model with LoRA and semantic-ID tokens (`backbone: llm`, the paper's). Building, saving and
loading either, behind one call each."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from recstack.config import from_dict
from recstack.page.pagellm.config import PageLLMConfig
from recstack.page.pagellm.llm_policy import LLMPagePolicy
from recstack.page.pagellm.model import PagePolicy
from recstack.train.checkpoint import load_tensors, load_weights, save_tensors, save_weights

AnyPagePolicy = PagePolicy | LLMPagePolicy


def build_policy(config: PageLLMConfig, codes: torch.Tensor, vocab: list[int], features: int) -> AnyPagePolicy:
    if config.backbone == "llm":
        from recstack.llm.config import load_llm
        from recstack.llm.lora import LoraSettings

        llm = load_llm(config.llm)
        llm.add_lora(from_dict(LoraSettings, config.lora, "page.lora"))  # type: ignore[attr-defined]
        return LLMPagePolicy(llm, codes, vocab, config.k)
    return PagePolicy(codes, vocab, features, config.k, config.model)


def save_policy(policy: AnyPagePolicy, path: Path) -> dict[str, Any]:
    meta: dict[str, Any] = {"vocab": policy.vocab, "code_shape": [int(n) for n in policy.codes.shape]}
    if isinstance(policy, LLMPagePolicy):
        policy.llm.save_adapter(path / "adapter")
        own = {"codes": policy.codes, "sid_tokens": policy.sid_tokens.weight.detach()}
        own.update({f"value_head.{k}": v.detach() for k, v in policy.value_head.state_dict().items()})
        save_tensors(own, path / "policy.safetensors")
        return meta
    save_weights(policy, path / "policy.safetensors")
    return {**meta, "feature_dim": policy.feature_dim}


def load_policy(config: PageLLMConfig, path: Path, meta: dict[str, Any]) -> AnyPagePolicy:
    codes = torch.zeros(meta["code_shape"], dtype=torch.long)  # the saved codes replace these
    if config.backbone == "llm":
        from recstack.llm.config import load_llm

        llm = load_llm(config.llm)
        llm.load_adapter(path / "adapter")  # type: ignore[attr-defined]
        tensors = load_tensors(path / "policy.safetensors")
        llm_policy = LLMPagePolicy(llm, tensors["codes"], meta["vocab"], config.k)
        llm_policy.sid_tokens.weight.data.copy_(tensors["sid_tokens"])
        llm_policy.value_head.load_state_dict(
            {k[len("value_head.") :]: v for k, v in tensors.items() if k.startswith("value_head.")}
        )
        return llm_policy.eval()
    policy = PagePolicy(codes, meta["vocab"], meta["feature_dim"], config.k, config.model)
    load_weights(policy, path / "policy.safetensors")
    return policy.eval()
