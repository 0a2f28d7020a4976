"""Cost of PageLLM's LLM backbone (SmolLM2-135M-Instruct + LoRA + semantic-ID tokens) on a real run.

    python benchmarks/page_llm_cost.py --run runs/cascade-bench/ml-100k-cascade --requests 8

Builds the page context of the first `--requests` valid requests exactly as `page: {name: pagellm,
backbone: llm}` does, then times one SFT step (teacher-forced page, backward, AdamW) and greedy page
writing, per request; prints the prompt length. Appends to benchmarks/results/page_llm_cost.jsonl.
"""

from __future__ import annotations

import argparse
import datetime
import json
import time
from pathlib import Path

import torch

from recstack.cascade import Cascade
from recstack.cli.run import set_threads
from recstack.data.dataset import Dataset
from recstack.page.base import PageInputs
from recstack.page.item_space import item_space
from recstack.page.pagellm.arranger import PageLLMPage
from recstack.page.pagellm.backbones import build_policy
from recstack.page.pagellm.config import PageLLMConfig
from recstack.page.pagellm.pairs import target_pages


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--run", required=True)
    parser.add_argument("--requests", type=int, default=8)
    parser.add_argument("--llm", default="{}", help="LLMConfig mapping as JSON ({} = SmolLM2-135M-Instruct)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", default="benchmarks/results/page_llm_cost.jsonl")
    args = parser.parse_args()
    set_threads(args.threads)
    cascade = Cascade.load(args.run)
    dataset = Dataset.load(cascade.config.dataset.name)
    full = cascade.page_inputs(dataset, "valid")
    rows = torch.arange(args.requests)
    inputs = PageInputs(
        full.batch.select(rows),
        _rows(full.candidates, rows),
        {task: scores[rows] for task, scores in full.scores.items()},
        full.targets.select(rows) if full.targets is not None else None,
        full.dataset,
    )
    config = PageLLMConfig(
        backbone="llm",
        llm=json.loads(args.llm),
        channel_weights=dict(cascade.config.page.get("channel_weights", {})),
        tune=False,
    )
    arranger = PageLLMPage(config)
    context, _ = arranger.context(inputs)
    space = item_space(cascade.retrieval_view(dataset), config.item_space)
    policy = build_policy(config, space.codes, space.vocab, context.features.shape[2])
    prompt_tokens = int(policy.prompt(context).shape[1])  # type: ignore[union-attr]
    optimizer = torch.optim.AdamW([p for p in policy.parameters() if p.requires_grad], lr=1e-4)
    targets = target_pages(context, config.k)
    policy.train()
    started = time.perf_counter()
    loss = -policy.evaluate(context, targets)[0].sum(1).mean()
    optimizer.zero_grad()
    loss.backward()
    optimizer.step()
    sft_seconds = time.perf_counter() - started
    policy.eval()
    started = time.perf_counter()
    policy.generate(context, greedy=True)
    generate_seconds = time.perf_counter() - started
    record = {
        "date": datetime.date.today().isoformat(),
        "run": args.run,
        "llm": args.llm,
        "requests": args.requests,
        "prompt_tokens": prompt_tokens,
        "page_tokens": config.k * int(space.codes.shape[1]),
        "sft_step_seconds": round(sft_seconds, 2),
        "sft_seconds_per_request": round(sft_seconds / args.requests, 3),
        "generate_seconds": round(generate_seconds, 2),
        "pages_per_second": round(args.requests / generate_seconds, 3),
        "threads": args.threads,
    }
    print(json.dumps(record, indent=1))
    with Path(args.out).open("a") as out:
        out.write(json.dumps(record) + "\n")


def _rows(candidates, rows):  # type: ignore[no-untyped-def]
    from recstack.data.batch import Candidates

    evidence = candidates.channel_scores[rows] if candidates.channel_scores is not None else None
    return Candidates(
        candidates.items[rows], candidates.scores[rows], candidates.channels[rows], candidates.channel_names, evidence
    )


if __name__ == "__main__":
    main()
