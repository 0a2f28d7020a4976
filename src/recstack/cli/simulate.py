"""`recstack simulate RUN [RUN_B]`: online evaluation of saved cascades in the world simulator.

Serves each run's pages (and the pages of any --baseline) to the same simulated users over several
sessions, collects their feedback, and reports per page: sampled clicks / likes / long views /
purchases, expected engagement and page value from the world's ground truth, and distinct topics,
with intervals over users. With RUN_B it is an A/B test: paired differences RUN_B - RUN.
Writes results.json, report.md, report.html and plots to --out (default RUN/simulate[-vs-B]).
"""

from __future__ import annotations

import dataclasses
import platform
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import typer

from recstack.cli.common import console, print_metrics
from recstack.cli.run import set_threads
from recstack.errors import ConfigError
from recstack.registry import names
from recstack.simulate.config import SimulateConfig
from recstack.simulate.online import evaluate_online
from recstack.simulate.report import TABLE_METRICS, write_results

_DEFAULTS = {f.name: f.default for f in dataclasses.fields(SimulateConfig) if f.default is not dataclasses.MISSING}


def _default(key: str) -> str:
    return f"(default {_DEFAULTS[key]})"


def simulate_command(
    run: Path = typer.Argument(..., help="run folder written by `recstack run` on world data"),
    run_b: Path | None = typer.Argument(None, help="second run folder: an A/B test, differences are RUN_B - RUN"),
    users: int | None = typer.Option(None, "--users", "-n", help=f"simulated users {_default('users')}"),
    sessions: int | None = typer.Option(None, "--sessions", "-s", help=f"pages per user {_default('sessions')}"),
    baseline: list[str] = typer.Option(
        [], "--baseline", "-b", help="baseline arm: random, oracle, logged, or all (repeatable, or comma-separated)"
    ),
    page_size: int | None = typer.Option(None, "--page-size", "-k", help="items per page (default: RUN's page.k)"),
    scenario: str | None = typer.Option(None, "--scenario", help="serve every page in this scenario"),
    gap_hours: float | None = typer.Option(
        None, "--gap-hours", help=f"simulated hours between sessions {_default('session_gap_hours')}"
    ),
    crn: bool | None = typer.Option(
        None, "--crn/--no-crn", help="common random numbers for the arms' feedback (default on)"
    ),
    closed_loop: bool | None = typer.Option(
        None, "--closed-loop/--open-loop", help="clicks join the history before the next session (default closed)"
    ),
    confidence: float | None = typer.Option(None, "--confidence", help=f"interval level {_default('confidence')}"),
    seed: int | None = typer.Option(None, "--seed", help=f"simulation seed {_default('seed')}"),
    batch_size: int | None = typer.Option(None, "--batch-size", help=f"users per batch {_default('batch_size')}"),
    out: Path | None = typer.Option(None, "--out", help="output folder (default RUN/simulate, RUN/simulate-vs-B)"),
    threads: int | None = typer.Option(None, "--threads", help="torch threads (default: one per core)"),
) -> None:
    """Serve a run's pages to simulated users; report engagement with intervals (A/B with RUN_B)."""
    set_threads(threads)
    kinds = [k.strip() for value in baseline for k in value.split(",") if k.strip()]
    if "all" in kinds:
        kinds = [k for k in kinds if k != "all"] + [k for k in ("random", "logged", "oracle") if k not in kinds]
    unknown = sorted(set(kinds) - set(names("sim_policy")))
    if unknown:
        raise ConfigError(f"--baseline {unknown[0]!r}: unknown; known: {', '.join(names('sim_policy'))}, all")
    options: dict[str, Any] = {
        "users": users,
        "sessions": sessions,
        "page_size": page_size,
        "scenario": scenario,
        "session_gap_hours": gap_hours,
        "common_random_numbers": crn,
        "closed_loop": closed_loop,
        "confidence": confidence,
        "seed": seed,
        "batch_size": batch_size,
    }
    config = SimulateConfig(baselines=kinds, **{k: v for k, v in options.items() if v is not None})
    runs: list[str | Path] = [run] if run_b is None else [run, run_b]
    result, summary = evaluate_online(runs, config)
    w = result.world
    world = (
        f"seed {w['seed']}: {w['users']:,} users, {w['items']:,} items, {w['topics']} topics, scenarios "
        f"{', '.join(w['scenarios'])}; dataset {w['dataset']!r} ({w['catalogue']:,} items in its catalogue)"
    )
    facts: dict[str, Any] = {
        "command": _command(runs, config, out),
        "runs": ", ".join(str(r) for r in runs),
        "world": world,
        "users": f"{len(result.users):,} (drawn from the run's dataset users, seed {config.seed})",
        "sessions": f"{config.sessions} per user, {config.session_gap_hours:g} h apart, after the end of the log",
        "page size": result.page_size,
        "scenario": config.scenario or "drawn per session by the world's request shares",
        "feedback": ("common random numbers" if config.common_random_numbers else "independent draws per arm")
        + ("; closed loop (clicks join the history)" if config.closed_loop else "; open loop"),
        "page value weights": config.weights,
        "intervals": f"{config.confidence:.0%}, {summary['interval_method']}",
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "machine": f"{platform.machine()} ({__import__('os').cpu_count()} cpus)",
        "seconds": round(result.seconds, 1),
        "policy seconds": {arm: round(s, 1) for arm, s in result.policy_seconds.items()},
        "consumed items removed from the ranked lists": result.history_removed,
    }
    target = out or run / ("simulate" if run_b is None else f"simulate-vs-{run_b.name}")
    title = "recstack simulate: " + " vs ".join(info["name"] for info in result.arms)
    folder = write_results(target, title, {**facts, "config": dataclasses.asdict(config)}, summary, config.confidence)
    _print(summary, config.confidence)
    console.print(f"report: {folder / 'report.html'}  (and report.md, results.json)")


def _command(runs: list[str | Path], config: SimulateConfig, out: Path | None) -> str:
    """The full command line that reproduces this simulation."""
    parts = ["recstack simulate", *map(str, runs), f"--users {config.users}", f"--sessions {config.sessions}"]
    if config.baselines:
        parts.append("--baseline " + ",".join(config.baselines))
    if config.page_size is not None:
        parts.append(f"--page-size {config.page_size}")
    if config.scenario is not None:
        parts.append(f"--scenario {config.scenario}")
    parts += [f"--gap-hours {config.session_gap_hours:g}", f"--seed {config.seed}"]
    parts += [] if config.common_random_numbers else ["--no-crn"]
    parts += [] if config.closed_loop else ["--open-loop"]
    parts += [] if config.confidence == 0.95 else [f"--confidence {config.confidence:g}"]
    parts += [] if config.batch_size == 512 else [f"--batch-size {config.batch_size}"]
    parts += [] if out is None else [f"--out {out}"]
    return " ".join(parts)


def _print(summary: dict[str, Any], confidence: float) -> None:
    level = f"{confidence:.0%}"
    rows = {
        arm: {m: f"{v[m]['mean']:.4f} ± {v[m]['half_width']:.4f}" for m in TABLE_METRICS}
        for arm, v in summary["arms"].items()
    }
    print_metrics(f"per page: mean ± {level} half-width over users", rows)
    for name, comparison in summary["comparisons"].items():
        table = {
            metric: {
                "difference": f"{d['difference']:+.4f}",
                f"{level} interval": f"[{d['low']:+.4f}, {d['high']:+.4f}]",
                "relative": f"{d['relative']:+.2%}",
                "p": f"{d['p_value']:.3g}",
                "unpaired ±": f"{d['unpaired_half_width']:.4f}",
            }
            for metric, d in comparison["metrics"].items()
            if metric in TABLE_METRICS
        }
        print_metrics(f"{name}: paired differences", table)
    for arm, share in summary.get("oracle_gap_closed", {}).items():
        if arm in ("random", "oracle"):
            continue
        console.print(f"{arm}: closes {share:.1%} of the random → oracle page-value gap")
