"""Load test of `recstack serve`: p50/p95/p99 latency, throughput and errors at several concurrencies,
micro-batching on vs off, and `recstack recommend` per request beside it.

    python benchmarks/serve_load.py --run runs/cascade-bench/ml-100k-cascade --concurrency 1,8,32 \
        --batching on,off --requests 600 --seconds 60 --cli-users 3
    python benchmarks/serve_load.py --run RUN --concurrency 8 --batching on --seconds 60 --reload-every 5  # swaps
    python benchmarks/serve_load.py --url http://127.0.0.1:8000 --users 1,2,3 --concurrency 8   # a running server

With --run, each batching mode gets its own server (`recstack serve RUN --port <free>`) started in a
subprocess and stopped at the end. Requests are POST /v1/recommend for known users drawn at random
(seeded), k=10; each level is bounded by --requests and --seconds, after --warmup requests. Loopback
only: the script refuses any other host. It prints a markdown table and appends one JSON record per
(mode, concurrency) level, and one for the CLI, to benchmarks/results/serve.jsonl. The server gets a
fresh random admin token, so --reload-every can hot-reload the same run under load (counted per status).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import random
import secrets
import shlex
import socket
import subprocess
import sys
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import httpx
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from cascade import git_commit
from sequential import RESULTS, append_jsonl

RESULTS_FILE = RESULTS.with_name("serve.jsonl")
RECSTACK = Path(sys.executable).with_name("recstack")
LOOPBACK = {"127.0.0.1", "localhost", "::1"}
TOKEN = secrets.token_hex(16)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start_server(run: str, batching: bool, extra: list[str]) -> tuple[subprocess.Popen[bytes], str, list[str]]:
    port = free_port()
    command = [str(RECSTACK), "serve", run, "--port", str(port), "--log-level", "warning", *extra]
    command.append("--micro-batching" if batching else "--no-micro-batching")
    env = {**os.environ, "RECSTACK_ADMIN_TOKEN": TOKEN}  # for --reload-every
    server = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env)
    url, deadline = f"http://127.0.0.1:{port}", time.monotonic() + 120
    while True:
        if server.poll() is not None:
            raise SystemExit(f"server exited: {server.stderr.read().decode() if server.stderr else ''}")
        try:
            if httpx.get(f"{url}/readyz", timeout=1).status_code == 200:
                return server, url, command
        except httpx.TransportError:
            pass
        if time.monotonic() > deadline:
            server.terminate()
            raise SystemExit("server not ready within 120 s")
        time.sleep(0.2)


def rss_mb(pid: int | None) -> float | None:
    try:
        status = Path(f"/proc/{pid}/status").read_text() if pid else ""
    except OSError:
        return None
    line = next((x for x in status.splitlines() if x.startswith("VmRSS:")), None)
    return int(line.split()[1]) / 1024 if line else None


async def load_level(
    url: str,
    users: list[str],
    concurrency: int,
    requests: int,
    seconds: float,
    warmup: int,
    seed: int,
    reload_every: float = 0.0,
    server_pid: int | None = None,
    rss_every: float = 0.0,
) -> dict[str, Any]:
    """`concurrency` closed-loop clients until `requests` are sent or `seconds` pass; with `reload_every`,
    POST /admin/reload (same run) every that many seconds meanwhile."""
    rng = random.Random(seed)
    latencies: list[float] = []
    errors: dict[str, int] = {}
    batch_sizes: list[int] = []
    stages: dict[str, list[float]] = {}
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(base_url=url, timeout=30, limits=limits) as client:
        for _ in range(warmup):
            await client.post("/v1/recommend", json={"user_id": rng.choice(users), "k": 10})
        rss_start = rss_mb(server_pid)  # after the warm-up: growth from here is what a soak checks
        sent, started = 0, time.perf_counter()
        deadline = started + seconds

        async def worker() -> None:
            nonlocal sent
            while sent < requests and time.perf_counter() < deadline:
                sent += 1
                t0 = time.perf_counter()
                try:
                    response = await client.post("/v1/recommend", json={"user_id": rng.choice(users), "k": 10})
                except httpx.HTTPError as exc:
                    errors[type(exc).__name__] = errors.get(type(exc).__name__, 0) + 1
                    continue
                if response.status_code != 200:
                    errors[str(response.status_code)] = errors.get(str(response.status_code), 0) + 1
                    continue
                latencies.append(time.perf_counter() - t0)
                body = response.json()
                batch_sizes.append(body["batch_size"])
                for stage, ms in body["timings_ms"].items():
                    stages.setdefault(stage, []).append(ms)

        reloads: dict[str, int] = {}

        async def reloader() -> None:
            while reload_every > 0 and sent < requests and time.perf_counter() + reload_every < deadline:
                await asyncio.sleep(reload_every)
                response = await client.post("/admin/reload", headers={"Authorization": f"Bearer {TOKEN}"})
                reloads[str(response.status_code)] = reloads.get(str(response.status_code), 0) + 1

        rss_trace: list[tuple[float, float | None]] = []

        async def rss_sampler() -> None:  # the server's resident memory over the level (soak)
            while rss_every > 0 and sent < requests and time.perf_counter() + rss_every < deadline:
                await asyncio.sleep(rss_every)
                rss_trace.append((round(time.perf_counter() - started, 1), rss_mb(server_pid)))

        await asyncio.gather(reloader(), rss_sampler(), *(worker() for _ in range(concurrency)))
        wall = time.perf_counter() - started
    ms = np.array(latencies) * 1000 if latencies else np.array([float("nan")])
    return {
        "concurrency": concurrency,
        "requests": len(latencies) + sum(errors.values()),
        "ok": len(latencies),
        "errors": errors,
        "seconds": round(wall, 2),
        "throughput_rps": round(len(latencies) / wall, 1),
        "p50_ms": round(float(np.percentile(ms, 50)), 2),
        "p95_ms": round(float(np.percentile(ms, 95)), 2),
        "p99_ms": round(float(np.percentile(ms, 99)), 2),
        "reloads": reloads,
        "mean_batch": round(float(np.mean(batch_sizes)), 2) if batch_sizes else None,
        "server_stage_mean_ms": {s: round(float(np.mean(v)), 3) for s, v in stages.items()},
        "server_rss_start_mb": rss_start,
        "server_rss_trace": rss_trace,
    }


def time_cli(run: str, users: list[str]) -> dict[str, Any]:
    """Wall time of `recstack recommend` (a fresh process per request, as a user would run it)."""
    walls = []
    for user in users:
        started = time.perf_counter()
        done = subprocess.run(
            [str(RECSTACK), "recommend", "--run", run, "--user", user, "-k", "10"], capture_output=True
        )
        walls.append(time.perf_counter() - started)
        if done.returncode != 0:
            raise SystemExit(f"recstack recommend failed: {done.stderr.decode()}")
    ms = np.array(walls) * 1000
    return {
        "mode": "recstack recommend (CLI)",
        "users": users,
        "requests": len(users),
        "mean_ms": round(float(ms.mean()), 1),
        "min_ms": round(float(ms.min()), 1),
        "max_ms": round(float(ms.max()), 1),
    }


def known_users(run: str, count: int, seed: int) -> list[str]:
    from recstack.cascade import Cascade
    from recstack.data.dataset import Dataset

    config = Cascade.load(run).config
    raw = Dataset.load(config.dataset.name).users["raw_id"].cast(str).to_list()
    return random.Random(seed).sample(raw, min(count, len(raw)))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--run", help="run folder: start `recstack serve` on it (one server per batching mode)")
    parser.add_argument("--url", help="an already running server on loopback (instead of --run)")
    parser.add_argument("--users", help="comma-separated raw user ids (default: 200 drawn from the run's dataset)")
    parser.add_argument("--concurrency", default="1,8,32")
    parser.add_argument("--batching", default="on,off", help="with --run: on, off or on,off")
    parser.add_argument("--requests", type=int, default=600, help="measured requests per level (upper bound)")
    parser.add_argument("--seconds", type=float, default=60.0, help="time per level (upper bound)")
    parser.add_argument("--warmup", type=int, default=20)
    parser.add_argument("--cli-users", type=int, default=0, help="also time `recstack recommend` for this many users")
    parser.add_argument(
        "--server-args",
        default="",
        help="extra `recstack serve` options, e.g. --server-args='--threads 1 --max-wait-ms 0'",
    )
    parser.add_argument("--reload-every", type=float, default=0.0, help="with --run: hot reload every S seconds")
    parser.add_argument("--rss-every", type=float, default=0.0, help="sample the server's RSS every S seconds")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    if bool(args.run) == bool(args.url):
        parser.error("give exactly one of --run or --url")
    if args.url and urlparse(args.url).hostname not in LOOPBACK:
        parser.error(f"--url must be on loopback ({', '.join(sorted(LOOPBACK))}); this tool never loads other hosts")
    users = args.users.split(",") if args.users else known_users(args.run, 200, args.seed) if args.run else []
    if not users:
        parser.error("--url needs --users")
    levels = [int(c) for c in args.concurrency.split(",")]
    base = {
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "commit": git_commit(),
        "machine": f"{platform.machine()}, {os.cpu_count()} cpus, load {os.getloadavg()[0]:.2f}",
        "benchmark": "python benchmarks/serve_load.py " + shlex.join(sys.argv[1:]),
        "run": args.run or args.url,
    }
    rows = []
    modes = [m == "on" for m in args.batching.split(",")] if args.run else [None]
    for batching in modes:
        server, url, command = (
            start_server(args.run, bool(batching), shlex.split(args.server_args)) if args.run else (None, args.url, [])
        )
        try:
            for level in levels:
                result = asyncio.run(
                    load_level(
                        url,
                        users,
                        level,
                        args.requests,
                        args.seconds,
                        args.warmup,
                        args.seed + level,
                        args.reload_every,
                        server.pid if server else None,
                        args.rss_every,
                    )
                )
                mode = "server" if batching is None else f"server, micro-batching {'on' if batching else 'off'}"
                record = {
                    **base,
                    "mode": mode,
                    "server_command": shlex.join(command),
                    **result,
                    "server_rss_mb": rss_mb(server.pid if server else None),
                }
                append_jsonl(RESULTS_FILE, record)
                rows.append(record)
                print(
                    f"{mode}, concurrency {level}: p50 {result['p50_ms']} ms, p99 {result['p99_ms']} ms, "
                    f"{result['throughput_rps']} req/s, errors {result['errors'] or 0}, reloads {result['reloads'] or '-'}",
                    flush=True,
                )
        finally:
            if server is not None:
                server.terminate()
                server.wait(timeout=30)
    print("\n| mode | concurrency | requests | errors | p50 ms | p95 ms | p99 ms | req/s | mean batch |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        errors = sum(r["errors"].values())
        print(
            f"| {r['mode']} | {r['concurrency']} | {r['requests']} | {errors} | {r['p50_ms']} | {r['p95_ms']} | "
            f"{r['p99_ms']} | {r['throughput_rps']} | {r['mean_batch']} |"
        )
    if args.cli_users and args.run:
        cli = {**base, **time_cli(args.run, users[: args.cli_users])}
        append_jsonl(RESULTS_FILE, cli)
        print(
            f"| {cli['mode']} | 1 | {cli['requests']} | 0 | {cli['mean_ms']} (mean) | | {cli['max_ms']} (max) | "
            f"{round(1000 / cli['mean_ms'], 2)} | |"
        )


if __name__ == "__main__":
    main()
