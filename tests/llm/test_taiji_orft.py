"""ORFT on the tiny Llama: the PPL filter keeps exactly the samples at or below the median; LoRA SFT learns."""

import pytest
import torch

from recstack.errors import ConfigError, DataError
from recstack.llm.taiji.orft import ORFTConfig, PPLRejectionFilter
from recstack.llm.taiji.sft import SFTConfig, sft_loss, train_sft
from recstack.llm.tiny import tiny_llama
from tests.helpers import seeded

PROMPT = [{"role": "user", "content": "history: lipstick, nail polish"}]
REASONINGS = ["she likes nails", "colour matters", "", "lips then nails then lips", "x", "buys makeup weekly"]


def test_ppl_filter_keeps_exactly_the_samples_at_or_below_the_median():
    student = tiny_llama(seed=seeded(0), context_window=256)
    filt = PPLRejectionFilter(ORFTConfig())
    ppl = filt.perplexities(student, [PROMPT] * 6, REASONINGS, ["nail polish red"] * 6)
    assert ppl.shape == (6,) and torch.isfinite(ppl).all()
    # the PPL is that of the item's tokens only, after prompt + reasoning + connector
    head = filt.scoring_prompt(student, PROMPT, REASONINGS[0])
    assert head.startswith(student.render(PROMPT)) and head.endswith(REASONINGS[0] + ORFTConfig.connector)
    direct = student.perplexity([head], ["nail polish red"])
    assert float(direct[0]) == pytest.approx(float(ppl[0]), rel=1e-5)
    keep = filt.keep(ppl)
    median = torch.quantile(ppl, 0.5)
    assert keep.tolist() == (ppl <= median).tolist()
    assert int(keep.sum()) == 3  # six distinct values: the lower half
    assert filt.keep(torch.tensor([1.0, 2.0, 3.0])).tolist() == [True, True, False]
    assert filt.keep(torch.tensor([2.0, 2.0, 2.0, 5.0])).tolist() == [
        True,
        True,
        True,
        False,
    ]  # ties at the median stay
    loose = PPLRejectionFilter(ORFTConfig(quantile=1.0)).keep(ppl)
    assert loose.all()


def test_per_user_scope_and_bad_input():
    filt = PPLRejectionFilter(ORFTConfig(scope="per_user"))
    ppl = torch.tensor([1.0, 9.0, 100.0, 200.0])
    assert filt.keep(ppl, [1, 1, 2, 2]).tolist() == [True, False, True, False]
    assert PPLRejectionFilter().keep(ppl).tolist() == [True, True, False, False]
    with pytest.raises(DataError, match="NaN"):
        PPLRejectionFilter().keep(torch.tensor([1.0, float("nan")]))
    with pytest.raises(ConfigError, match="quantile"):
        ORFTConfig(quantile=0.0)


def test_lora_sft_lowers_the_loss_on_its_samples():
    student = tiny_llama(seed=seeded(0), context_window=256)
    prompts = [PROMPT] * 4
    targets = ["she likes nails\n<answer>\ncategory: Makeup > Nails\nintent: polish\n</answer>"] * 4
    with torch.no_grad():
        before = float(sft_loss(student, prompts, targets))
    frozen = [p.clone() for p in student.model.parameters()]
    history = train_sft(
        student, prompts, targets, SFTConfig(epochs=8, batch_size=2, lr=3e-2, warmup_steps=1, progress=False)
    )
    assert len(history) == 16
    with torch.no_grad():
        after = float(sft_loss(student, prompts, targets))
    # the tiny model's frozen random embeddings cap how peaked its outputs can get: a small but sure drop
    assert after < before - 0.05, (before, after)
    assert all(p.requires_grad is False for n, p in student.model.named_parameters() if "lora_" not in n)
    assert len(frozen) < len(list(student.model.parameters()))  # LoRA weights were added
    with pytest.raises(DataError, match="no samples"):
        train_sft(student, [], [], SFTConfig(progress=False))
