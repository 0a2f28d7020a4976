"""The two parts of the post-training loss (OneMall, arXiv 2601.21770, §2.16: L = 0.5·L_RL + L_NTP +
L_contrastive): the RL term over a step's kept groups (GRPO or DPO, losses.py) and the supervised term
the model itself defines (GenerativeModel.loss, base.py) on the true next items of the same requests.

Shapes: B' kept requests of K candidates with C code levels.
"""

from __future__ import annotations

from typing import Any

import torch

from recstack.retrieval.generative.base import GenerativeModel
from recstack.retrieval.generative.posttrain.config import RLPostTrainConfig
from recstack.retrieval.generative.posttrain.losses import (
    code_log_probs,
    dpo_loss,
    dpo_pairs,
    grpo_loss,
    masked_group_advantages,
)
from recstack.semantic_ids.semantic_ids import PrefixTrie


def rl_loss(
    model: GenerativeModel,
    reference: GenerativeModel,
    inputs: dict[str, torch.Tensor],
    codes: torch.Tensor,
    rewards: torch.Tensor,
    valid: torch.Tensor,
    config: RLPostTrainConfig,
    trie: PrefixTrie | None = None,
) -> tuple[torch.Tensor, float | None]:
    """inputs (B' requests), codes [B', K, C], rewards and valid [B', K] -> (L_RL, the GRPO KL or None).

    GRPO: every valid candidate, its advantage normalised in its group. DPO: the `dpo_pairs` best and worst
    valid candidates of each group. Log-probs under the reference are computed without gradient."""
    c = config
    codes = torch.where(valid[..., None], codes, codes[:, :1])  # empty slots: a valid tuple, never in the loss
    if c.objective == "dpo":
        best, worst = dpo_pairs(rewards, valid, c.dpo_pairs)
        codes = codes.gather(1, torch.cat([best, worst], 1)[..., None].expand(-1, -1, codes.shape[2]))
    logp = code_log_probs(model, inputs, codes, trie)
    with torch.no_grad():
        ref = code_log_probs(reference, inputs, codes, trie)
    if c.objective == "dpo":
        seq, ref_seq, p = logp.sum(-1), ref.sum(-1), c.dpo_pairs
        chosen, rejected = seq[:, :p].reshape(-1), seq[:, p:].reshape(-1)
        return dpo_loss(chosen, rejected, ref_seq[:, :p].reshape(-1), ref_seq[:, p:].reshape(-1), c.dpo_beta), None
    device, levels = logp.device, codes.shape[2]
    adv = masked_group_advantages(rewards, valid, c.scale_rewards, c.advantage_eps).reshape(-1).to(device)
    rows = valid.reshape(-1).to(device)
    loss, kl = grpo_loss(
        logp.reshape(-1, levels)[rows],
        ref.reshape(-1, levels)[rows],
        adv[rows],
        c.kl_coef,
        c.loss_type,
        c.kl_estimator,
    )
    return loss, float(kl.detach())


def supervised_loss(
    model: GenerativeModel, batch: dict[str, torch.Tensor], config: RLPostTrainConfig
) -> tuple[torch.Tensor, dict[str, Any]]:
    """The model's loss dict on `batch` (with targets) -> (ntp_weight·L_NTP + contrastive_weight·L_con +
    aux·L_moe, the parts as floats). L_NTP = the "ce" entry when the model reports one (OneMall: mean
    next-code CE), else its "loss" (TIGER: CE summed over the levels) [I]."""
    parts = model.loss(batch)
    ntp = parts["ce"] if "ce" in parts else parts["loss"]
    total = config.ntp_weight * ntp
    logged: dict[str, Any] = {"loss_ntp": float(ntp.detach()), "loss_contrastive": None}
    if "contrastive" in parts:
        total = total + config.contrastive_weight * parts["contrastive"]
        logged["loss_contrastive"] = float(parts["contrastive"].detach())
    if "moe_aux" in parts:
        aux = config.aux_weight
        if aux is None:
            aux = float(getattr(getattr(model, "config", None), "aux_loss_weight", 0.0))
        total = total + aux * parts["moe_aux"]
        logged["loss_moe_aux"] = float(parts["moe_aux"].detach())
    return total, logged
