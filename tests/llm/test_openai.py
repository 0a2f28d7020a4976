"""The OpenAI-compatible client against recstack's own server (tiny Llama, loopback only)."""

from __future__ import annotations

import socket
import threading
import time

import pytest
import torch

pytest.importorskip("fastapi")
pytest.importorskip("uvicorn")
httpx = pytest.importorskip("httpx")

from recstack.errors import ConfigError  # noqa: E402
from recstack.llm import GenerationConfig, load_llm  # noqa: E402
from recstack.llm.openai_client import OpenAILM  # noqa: E402
from recstack.llm.server import create_app  # noqa: E402
from recstack.llm.tiny import tiny_llama  # noqa: E402

CHAT = [{"role": "user", "content": "hello there"}]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def served():
    import uvicorn

    local = tiny_llama(seed=0, context_window=96)
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(create_app(local), host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        assert time.monotonic() < deadline and thread.is_alive(), "server did not start"
        time.sleep(0.05)
    yield local, f"http://127.0.0.1:{port}/v1"
    server.should_exit = True
    thread.join(timeout=10)


def test_models_and_token_mode(served):
    _, url = served
    client = load_llm({"backend": "openai", "url": url})
    assert isinstance(client, OpenAILM) and client.name == "tiny" and client.context_window == 96
    assert client.token_mode and client.count_tokens("abcd") == 4


def test_generation_matches_the_local_model(served):
    local, url = served
    client = OpenAILM(url)
    prompts = ["abc", CHAT, "z" * 20]
    greedy = GenerationConfig(max_new_tokens=8, temperature=0)
    remote = client.generate(prompts, greedy)
    expected = local.generate(prompts, greedy)
    assert [g[0].text for g in remote] == [g[0].text for g in expected]
    assert [g[0].prompt_tokens for g in remote] == [g[0].prompt_tokens for g in expected]
    sampled = client.generate(["abc"], GenerationConfig(max_new_tokens=6, num_return_sequences=3, seed=5))
    assert len(sampled[0]) == 3 and sampled == client.generate(
        ["abc"], GenerationConfig(6, num_return_sequences=3, seed=5)
    )


def test_long_prompts_are_truncated_and_counted_by_the_client(served):
    _, url = served
    client = OpenAILM(url)
    out = client.generate(["A" * 300 + "end"], GenerationConfig(max_new_tokens=16, temperature=0))[0][0]
    assert out.prompt_truncated and out.prompt_tokens == 80 and client.stats["prompts_truncated"] == 1


def test_continuation_logprobs_match_the_local_model(served):
    local, url = served
    client = OpenAILM(url)
    prompts, continuations = ["abc", CHAT, "B" * 200], ["def", " ok then", "xy"]
    remote = client.continuation_logprobs(prompts, continuations)
    for got, want in zip(remote, local.continuation_logprobs(prompts, continuations)):
        torch.testing.assert_close(got, want, atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(
        client.perplexity(prompts, continuations), local.perplexity(prompts, continuations), rtol=1e-4, atol=1e-4
    )


def test_text_mode_without_tokenize(served):
    local, url = served
    client = OpenAILM(url, use_tokenize=False)
    greedy = GenerationConfig(max_new_tokens=5, temperature=0)
    assert client.generate(["abc", CHAT], greedy)[1][0].text == local.generate([CHAT], greedy)[0][0].text
    got = client.continuation_logprobs(["abc"], ["def"])[0]
    torch.testing.assert_close(got, local.continuation_logprobs(["abc"], ["def"])[0], atol=1e-4, rtol=1e-4)
    with pytest.raises(ConfigError, match="chat prompts"):
        client.continuation_logprobs([CHAT], ["x"])
    assert client.count_tokens("abcdefgh") == 2  # estimated


def test_bad_url_and_missing_url():
    with pytest.raises(ConfigError, match="llm.url"):
        load_llm({"backend": "openai"})
    client = OpenAILM(f"http://127.0.0.1:{free_port()}/v1", model="m", context_window=64, max_retries=0, timeout=2)
    with pytest.raises(ConfigError, match="cannot reach"):
        client.generate(["x"])


def test_cli_serve_subprocess(tmp_path):
    """`recstack llm serve --model tiny` in a subprocess on loopback; the client talks to it, then it stops."""
    import os
    import subprocess
    import sys

    port = free_port()
    env = {**os.environ, "RECSTACK_HOME": str(tmp_path), "OMP_NUM_THREADS": "1"}
    command = [sys.executable, "-m", "recstack.cli.main", "llm", "serve", "--model", "tiny", "--port", str(port)]
    process = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        deadline = time.monotonic() + 60
        while True:
            assert process.poll() is None, process.stdout.read() if process.stdout else "server exited"
            try:
                if httpx.get(f"http://127.0.0.1:{port}/health", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline, "server did not come up"
            time.sleep(0.2)
        client = load_llm({"backend": "openai", "url": f"http://127.0.0.1:{port}/v1"})
        out = client.generate([CHAT], GenerationConfig(max_new_tokens=4, temperature=0))[0][0]
        assert out.completion_tokens >= 1 and client.name == "tiny"
    finally:
        process.terminate()
        process.wait(timeout=20)


def test_server_echo_and_bad_requests(served):
    local, url = served
    root = url.removesuffix("/v1")
    body = {"prompt": ["abcdef", "xyz"], "max_tokens": 0, "echo": True, "logprobs": 0}
    answer = httpx.post(f"{url}/completions", json=body, timeout=30).json()
    first = answer["choices"][0]
    assert first["text"] == "abcdef" and first["logprobs"]["tokens"] == list("abcdef")
    assert first["logprobs"]["token_logprobs"][0] is None and first["logprobs"]["text_offset"] == [0, 1, 2, 3, 4, 5]
    want = local.continuation_logprobs(["a"], ["bcdef"])[0]
    torch.testing.assert_close(torch.tensor(first["logprobs"]["token_logprobs"][1:]), want, atol=1e-5, rtol=1e-5)
    assert answer["usage"]["prompt_tokens"] == 9
    assert httpx.post(f"{root}/tokenize", json={}, timeout=30).status_code == 400
    assert httpx.post(f"{url}/completions", json={"prompt": "a", "top_p": 2.0}, timeout=30).status_code == 400
    assert httpx.post(f"{url}/chat/completions", json={"messages": []}, timeout=30).status_code == 400
