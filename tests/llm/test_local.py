"""Local backend on the tiny random Llama: generation, scoring, truncation, LoRA."""

from __future__ import annotations

import math

import pytest
import torch

from recstack.errors import ConfigError, DataError
from recstack.llm.base import GenerationConfig, cut_at_stop
from recstack.llm.lora import LoraSettings
from recstack.llm.tiny import tiny_llama

CHAT = [{"role": "system", "content": "be brief"}, {"role": "user", "content": "hello there"}]


@pytest.fixture(scope="module")
def lm():
    return tiny_llama(seed=0, context_window=128)


def manual_logprobs(lm, prompt, continuation):
    """Reference: one unpadded forward over prompt + continuation."""
    p, c = lm.encode_prompt(prompt), lm.encode_text(continuation)
    with torch.no_grad():
        logits = lm.model(input_ids=torch.tensor([p + c])).logits[0].float()
    logprobs = logits.log_softmax(-1)
    return torch.stack([logprobs[len(p) - 1 + t, tok] for t, tok in enumerate(c)])


def test_tiny_is_deterministic_and_renders_chat(lm):
    other = tiny_llama(seed=0, context_window=128)
    for a, b in zip(lm.model.parameters(), other.model.parameters()):
        assert torch.equal(a, b)
    text = lm.render(CHAT)
    assert text.startswith("<|im_start|>system\nbe brief<|im_end|>") and text.endswith("<|im_start|>assistant\n")
    assert lm.tokenizer.decode(lm.encode_text("héllo > wörld")) == "héllo > wörld"
    assert lm.count_tokens("abc") == 3


def test_generate_shapes_seed_and_stop(lm):
    prompts = ["abc", CHAT, "x" * 30]
    config = GenerationConfig(max_new_tokens=12, num_return_sequences=2, seed=3, batch_size=2)
    out = lm.generate(prompts, config)
    assert [len(g) for g in out] == [2, 2, 2]
    assert out == lm.generate(prompts, config)  # seeded
    assert out[0][0].prompt_tokens == 3 and out[2][0].prompt_tokens == 30
    for gens in out:
        for g in gens:
            assert 1 <= g.completion_tokens <= 12 and g.finish_reason in ("stop", "length")
    # the same prompt alone (no padding) gives the same greedy text as inside a left-padded batch
    greedy = GenerationConfig(max_new_tokens=8, temperature=0)
    batched = lm.generate(prompts, greedy)
    alone = [lm.generate([p], greedy)[0] for p in prompts]
    assert [g[0].text for g in batched] == [g[0].text for g in alone]
    copies = lm.generate(["abc"], GenerationConfig(max_new_tokens=4, temperature=0, num_return_sequences=3))[0]
    assert len(copies) == 3 and copies[0] == copies[2]
    # stop strings: the text is cut before the first one, finish_reason "stop"
    first = batched[0][0]
    if len(first.text) >= 2:
        stopped = lm.generate(["abc"], GenerationConfig(max_new_tokens=8, temperature=0, stop=[first.text[1]]))[0][0]
        assert stopped.text == first.text[: first.text.index(first.text[1])] and stopped.finish_reason == "stop"


def test_cut_at_stop():
    assert cut_at_stop("a b STOP c END", ["END", "STOP"]) == ("a b ", True)
    assert cut_at_stop("abc", ["x"]) == ("abc", False)


def test_long_prompt_is_truncated_from_the_left_and_counted():
    lm = tiny_llama(seed=0, context_window=64)
    before = lm.stats["prompts_truncated"]
    out = lm.generate(["A" * 200 + "tail", "short"], GenerationConfig(max_new_tokens=10, temperature=0))
    long, short = out[0][0], out[1][0]
    assert long.prompt_truncated and long.prompt_tokens == 54 and not short.prompt_truncated
    assert lm.stats["prompts_truncated"] == before + 1 and lm.stats["tokens_cut"] >= 150
    # the kept part is the end of the prompt: same result as the last 54 tokens given directly
    same = lm.generate(["A" * 50 + "tail"], GenerationConfig(max_new_tokens=10, temperature=0))[0][0]
    assert same.text == long.text
    # scoring never crashes either: the prompt is cut to fit prompt + continuation in the window
    assert lm.continuation_logprobs(["B" * 500], ["xyz"])[0].shape == (3,)
    assert lm.continuation_logprobs(["q"], ["C" * 100])[0].shape == (63,)
    assert lm.stats["continuations_truncated"] == 1
    with pytest.raises(ConfigError, match="max_new_tokens"):
        lm.generate(["a"], GenerationConfig(max_new_tokens=64))


def test_continuation_logprobs_match_an_unpadded_forward(lm):
    prompts = ["abc", CHAT, "a much longer prompt than the others", ""]
    continuations = ["def", " ok", "x", "hello world"]
    batched = lm.continuation_logprobs(prompts, continuations)
    for prompt, continuation, got in zip(prompts, continuations, batched):
        if prompt:
            torch.testing.assert_close(got, manual_logprobs(lm, prompt, continuation), atol=1e-5, rtol=1e-5)
        assert got.shape == (len(continuation),) and bool((got <= 0).all())
    ppl = lm.perplexity(prompts, continuations)
    assert ppl.shape == (4,)
    assert math.isclose(ppl[0].item(), math.exp(-batched[0].mean().item()), rel_tol=1e-6)
    assert math.isnan(lm.perplexity(["a"], [""])[0].item())
    with pytest.raises(ConfigError, match="pair"):
        lm.continuation_logprobs(["a", "b"], ["c"])


def test_sequence_logprobs_has_grad_and_matches(lm):
    logprobs, mask = lm.sequence_logprobs(["abc", CHAT], ["de", "longer text"], add_eos=True)
    assert logprobs.shape == mask.shape == (2, 12) and logprobs.requires_grad
    assert mask.sum(1).tolist() == [3, 12]
    reference = lm.continuation_logprobs(["abc"], ["de"])[0]
    torch.testing.assert_close(logprobs[0, :2].detach(), reference, atol=1e-5, rtol=1e-5)
    assert (logprobs * mask).sum().requires_grad
    (logprobs * mask).sum().backward()
    assert lm.model.model.embed_tokens.weight.grad is not None
    lm.model.zero_grad(set_to_none=True)


def test_lora_save_load_gives_the_same_logits(tmp_path):
    lm = tiny_llama(seed=1, context_window=64)
    base_logits = lm.model(input_ids=torch.tensor([lm.encode_text("hello")])).logits.detach()
    lm.add_lora(LoraSettings(r=4, target_modules=["q_proj", "v_proj"]))
    trainable = lm.trainable_parameters()
    assert trainable and all("lora" in n for n, p in lm.model.named_parameters() if p.requires_grad)
    with torch.no_grad():
        for p in trainable:  # B starts at 0 (identity adapter): perturb so the test is not trivial
            p.add_(torch.randn_like(p) * 0.5)
    logprobs, mask = lm.sequence_logprobs(["hi"], ["there"])  # through the peft wrapper, grads reach LoRA only
    (logprobs * mask).sum().backward()
    assert all(p.grad is not None for p in trainable)
    assert lm.model.get_base_model().model.embed_tokens.weight.grad is None
    ids = torch.tensor([lm.encode_text("hello")])
    with torch.no_grad():
        adapted = lm.model(input_ids=ids).logits
    assert not torch.allclose(adapted, base_logits, atol=1e-4)
    folder = lm.save_adapter(tmp_path / "adapter")
    assert (folder / "adapter_model.safetensors").is_file() and not list(tmp_path.glob(".adapter*"))

    fresh = tiny_llama(seed=1, context_window=64)
    fresh.load_adapter(folder)
    with torch.no_grad():
        torch.testing.assert_close(fresh.model(input_ids=ids).logits, adapted)
    fresh.merge_adapter()
    with torch.no_grad():
        torch.testing.assert_close(fresh.model(input_ids=ids).logits, adapted, atol=1e-5, rtol=1e-5)
    assert not hasattr(fresh.model, "peft_config")
    with pytest.raises(DataError, match="no LoRA adapter"):
        fresh.load_adapter(tmp_path / "missing")
    with pytest.raises(ConfigError, match="no LoRA adapter to save"):
        fresh.save_adapter(tmp_path / "x")
