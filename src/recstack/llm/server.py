"""A small OpenAI-compatible HTTP server over a LocalLM (`recstack llm serve`), FastAPI + uvicorn.

Endpoints (the subset vLLM speaks, so recstack's client treats both alike):
    GET  /v1/models            {"data": [{"id": name, "max_model_len": context_window}]}
    POST /v1/completions       prompt: text | token ids | a list of either; n, max_tokens, temperature, top_p,
                               top_k, stop, seed; echo + logprobs: log-probabilities of the prompt tokens
                               (`token_logprobs`, first None, with `tokens` and `text_offset`)
    POST /v1/chat/completions  messages through the chat template; n, max_tokens, temperature, top_p, stop, seed
    POST /tokenize             {"prompt": text} or {"messages": [...]} -> {"tokens", "count", "max_model_len"}
    GET  /health
Prompts over the context window are cut from the left, flagged per choice as `prompt_truncated` (an
extension) and counted in the model's stats. Requests run one at a time (one model, one lock).
Serve on loopback unless you mean to expose the model.
"""

from __future__ import annotations

import threading
import time
import uuid
from typing import Any

from pydantic import BaseModel

from recstack.errors import ConfigError
from recstack.llm.base import Generation, GenerationConfig
from recstack.llm.local import LocalLM


def _fastapi() -> Any:
    try:
        import fastapi
    except ImportError as exc:
        raise ConfigError("recstack llm serve needs fastapi and uvicorn: pip install 'recstack[llm]'") from exc
    return fastapi


def _stop_list(stop: str | list[str] | None) -> list[str]:
    if stop is None:
        return []
    return [stop] if isinstance(stop, str) else list(stop)


def _usage(generations: list[Generation], prompt_tokens: int) -> dict[str, int]:
    completion = sum(g.completion_tokens for g in generations)
    return {"prompt_tokens": prompt_tokens, "completion_tokens": completion, "total_tokens": prompt_tokens + completion}


class CompletionRequest(BaseModel):
    model: str | None = None
    prompt: str | list[str] | list[int] | list[list[int]]
    max_tokens: int = 16
    temperature: float = 1.0
    top_p: float = 1.0
    top_k: int = 0
    n: int = 1
    stop: str | list[str] | None = None
    seed: int | None = None
    echo: bool = False
    logprobs: int | None = None


class ChatRequest(BaseModel):
    model: str | None = None
    messages: list[dict[str, str]]
    max_tokens: int | None = None
    max_completion_tokens: int | None = None
    temperature: float = 1.0
    top_p: float = 1.0
    top_k: int = 0
    n: int = 1
    stop: str | list[str] | None = None
    seed: int | None = None


class TokenizeRequest(BaseModel):
    model: str | None = None
    prompt: str | None = None
    messages: list[dict[str, str]] | None = None
    add_special_tokens: bool = True
    add_generation_prompt: bool = True


def create_app(lm: LocalLM) -> Any:
    """The FastAPI app serving `lm` under its name."""
    fastapi = _fastapi()
    app = fastapi.FastAPI(title=f"recstack llm: {lm.name}")
    lock = threading.Lock()

    def sampling(request: Any, max_tokens: int) -> GenerationConfig:
        try:
            return GenerationConfig(
                max_new_tokens=max_tokens,
                temperature=request.temperature,
                top_p=request.top_p,
                top_k=request.top_k,
                num_return_sequences=request.n,
                stop=_stop_list(request.stop),
                seed=request.seed,
            )
        except ConfigError as exc:
            raise fastapi.HTTPException(status_code=400, detail=str(exc)) from exc

    def envelope(kind: str, choices: list[dict[str, Any]], usage: dict[str, int]) -> dict[str, Any]:
        return {
            "id": f"{kind}-{uuid.uuid4().hex[:16]}",
            "object": "text_completion" if kind == "cmpl" else "chat.completion",
            "created": int(time.time()),
            "model": lm.name,
            "choices": choices,
            "usage": usage,
        }

    def echo_logprobs(ids: list[int]) -> dict[str, Any]:
        logprobs = lm.token_logprobs([ids])[0].tolist()
        kept = ids[len(ids) - len(logprobs) - 1 :]
        pieces = [lm.tokenizer.decode(kept[: k + 1]) for k in range(len(kept))]
        offsets = [0] + [len(p) for p in pieces[:-1]]
        tokens = [b[a:] for a, b in zip(offsets, pieces)]
        return {"tokens": tokens, "token_logprobs": [None, *logprobs], "text_offset": offsets, "top_logprobs": None}

    @app.get("/health")
    def health() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/v1/models")
    def models() -> dict[str, Any]:
        card = {"id": lm.name, "object": "model", "owned_by": "recstack", "max_model_len": lm.context_window}
        return {"object": "list", "data": [card]}

    @app.post("/tokenize")
    def tokenize(request: TokenizeRequest) -> dict[str, Any]:
        if request.messages is not None:
            ids = lm.encode_prompt(request.messages, request.add_generation_prompt)
        elif request.prompt is not None:
            ids = list(lm.tokenizer(request.prompt, add_special_tokens=request.add_special_tokens)["input_ids"])
        else:
            raise fastapi.HTTPException(status_code=400, detail="give prompt or messages")
        return {"tokens": ids, "count": len(ids), "max_model_len": lm.context_window}

    @app.post("/v1/completions")
    def completions(request: CompletionRequest) -> dict[str, Any]:
        prompt = request.prompt
        if isinstance(prompt, str) or (prompt and isinstance(prompt[0], int)):
            prompts: list[Any] = [prompt]
        else:
            prompts = list(prompt)
        rows = [lm.encode_prompt(p) if isinstance(p, str) else list(p) for p in prompts]
        if any(not r for r in rows):
            raise fastapi.HTTPException(status_code=400, detail="empty prompt")
        choices: list[dict[str, Any]] = []
        generated: list[Generation] = []
        with lock:
            if request.max_tokens > 0:
                outputs = lm.generate_tokens(rows, sampling(request, request.max_tokens))
            else:
                outputs = [[Generation("", len(r), 0, False, "length")] * request.n for r in rows]
            for row, gens in zip(rows, outputs):
                echo = lm.tokenizer.decode(row) if request.echo else ""
                logprobs = echo_logprobs(row) if request.echo and request.logprobs is not None else None
                for g in gens:
                    choices.append(
                        {
                            "index": len(choices),
                            "text": echo + g.text,
                            "finish_reason": g.finish_reason,
                            "logprobs": logprobs,
                            "prompt_truncated": g.prompt_truncated,
                        }
                    )
                    generated.append(g)
        prompt_tokens = sum(gens[0].prompt_tokens for gens in outputs)
        return envelope("cmpl", choices, _usage(generated, prompt_tokens))

    @app.post("/v1/chat/completions")
    def chat(request: ChatRequest) -> dict[str, Any]:
        if not request.messages:
            raise fastapi.HTTPException(status_code=400, detail="messages is empty")
        row = lm.encode_prompt(request.messages)
        limit = request.max_completion_tokens or request.max_tokens or max(1, min(512, lm.context_window - len(row)))
        with lock:
            gens = lm.generate_tokens([row], sampling(request, limit))[0]
        choices = [
            {
                "index": k,
                "message": {"role": "assistant", "content": g.text},
                "finish_reason": g.finish_reason,
                "prompt_truncated": g.prompt_truncated,
            }
            for k, g in enumerate(gens)
        ]
        return envelope("chatcmpl", choices, _usage(gens, gens[0].prompt_tokens))

    return app


def serve(lm: LocalLM, host: str = "127.0.0.1", port: int = 8000, log_level: str = "info") -> None:
    """Run the server in the foreground until interrupted."""
    try:
        import uvicorn
    except ImportError as exc:
        raise ConfigError("recstack llm serve needs uvicorn: pip install 'recstack[llm]'") from exc
    uvicorn.run(create_app(lm), host=host, port=port, log_level=log_level)
