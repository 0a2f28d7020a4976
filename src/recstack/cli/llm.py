"""`recstack llm ...`: language models — serve one over an OpenAI-compatible API; Taiji's steps join here.

    recstack llm serve                                  # the offline SmolLM2-135M-Instruct on 127.0.0.1:8000
    recstack llm serve --model /models/Qwen2.5-7B-Instruct --dtype bfloat16 --port 8001
    recstack llm serve --model tiny                     # tiny random Llama (tests, demos)

Every command takes the same model options (see `llm_options`), built into an LLMConfig.
"""

from __future__ import annotations

from typing import Any

import typer

from recstack.cli.common import console, friendly_errors
from recstack.errors import ConfigError

llm_app = typer.Typer(
    no_args_is_help=True,
    add_completion=False,
    help="Language models: serve one over an OpenAI-compatible API; Taiji reasoning, filtering, SFT, RL, features.",
)

MODEL_HELP = "model folder, .gguf file, hub id, 'tiny', or empty for the offline SmolLM2-135M-Instruct"


def llm_options(
    model: str | None, device: str, dtype: str, context_window: int | None, adapter: str | None
) -> dict[str, Any]:
    """LLMConfig mapping for the local backend from the shared command-line options."""
    config: dict[str, Any] = {"model": model, "device": device, "dtype": dtype, "adapter": adapter}
    if context_window is not None:
        config["context_window"] = context_window
    return config


# ---- serve ---------------------------------------------------------------------------------------
def serve_command(
    model: str | None = typer.Option(None, "--model", "-m", help=MODEL_HELP),
    host: str = typer.Option("127.0.0.1", help="address to listen on (loopback by default)"),
    port: int = typer.Option(8000, help="TCP port"),
    device: str = typer.Option("auto", help="auto | cpu | cuda | cuda:1"),
    dtype: str = typer.Option("float32", help="float32 | bfloat16 | float16"),
    context_window: int | None = typer.Option(None, help="tokens; default: the model's"),
    adapter: str | None = typer.Option(None, help="a LoRA adapter folder to load on top"),
) -> None:
    """Serve a local model over the OpenAI API (/v1/completions, /v1/chat/completions, /v1/models, /tokenize)."""
    from recstack.llm.config import LLMConfig, load_llm
    from recstack.llm.local import LocalLM
    from recstack.llm.server import serve

    lm = load_llm(LLMConfig(**llm_options(model, device, dtype, context_window, adapter)))
    if not isinstance(lm, LocalLM):  # load_llm's default backend is local; keep mypy and readers sure
        raise ConfigError(f"recstack llm serve serves a local model, got {type(lm).__name__}")
    console.print(
        f"serving [bold]{lm.name}[/] ({lm.context_window}-token window, {lm.device}) at "
        f"http://{host}:{port}/v1 — point clients at it with backend: openai, url: http://{host}:{port}/v1"
    )
    serve(lm, host=host, port=port)


llm_app.command("serve")(friendly_errors(serve_command))


# ---- Taiji: reason | filter | sft | popo | features | intent (cli/llm_taiji.py) -------------------
from recstack.cli.llm_taiji import register_taiji  # noqa: E402

register_taiji(llm_app)
