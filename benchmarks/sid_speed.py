"""Benchmark: semantic-ID quantizer speed and quality on synthetic embeddings.

Fits RQ-KMeans, RQ-GMM (3 × 256) and Res-KMeans+FSQ (2 × 256 + FSQ 3^13) on 100,000 × 384 clustered,
unit-norm embeddings (target: fit < 60 s each on 2 cores), reports collisions / utilisation /
reconstruction, then encodes 1,000,000 embeddings streamed in chunks in a fresh subprocess (it loads
the saved quantizer) and reports that process's peak RSS, to show memory stays bounded.

    .venv/bin/python benchmarks/sid_speed.py                      # full run -> results/sid_speed.json
    .venv/bin/python benchmarks/sid_speed.py --n 20000 --encode-n 100000 --out /tmp/sid.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

# The benchmark machine is shared: idle OpenMP threads that spin steal the cores they wait for.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import torch

from recstack.registry import build
from recstack.semantic_ids import Quantizer, SemanticIds

DIM, CLUSTERS, CHUNK = 384, 4096, 65536


def synthetic_chunk(index: int, rows: int, seed: int = 0) -> torch.Tensor:
    """Rows of chunk `index`: a mixture of 4096 cluster centres plus noise, L2-normalised (like
    sentence embeddings). The centres are shared by every chunk; each chunk has its own noise."""
    centres = torch.randn(CLUSTERS, DIM, generator=torch.Generator().manual_seed(seed))
    g = torch.Generator().manual_seed(seed * 1_000_003 + index + 1)
    which = torch.randint(CLUSTERS, (rows,), generator=g)
    x = centres[which] + 0.6 * torch.randn(rows, DIM, generator=g)
    return x / x.norm(dim=1, keepdim=True)


def chunks(total: int, seed: int, first_index: int = 0):
    """`total` rows in chunks of CHUNK; a different first_index gives fresh rows of the same mixture."""
    for index, start in enumerate(range(0, total, CHUNK)):
        yield synthetic_chunk(first_index + index, min(CHUNK, total - start), seed)


def peak_rss_mb() -> float:
    """Peak resident memory of this process (VmHWM; unlike ru_maxrss it is not inherited across exec)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB


def encode_only(saved: str, total: int, seed: int) -> None:
    """Child process: load the quantizer, stream-encode `total` rows, print timing and peak RSS as JSON."""
    quantizer = Quantizer.load(saved)
    rss_loaded = peak_rss_mb()
    started = time.perf_counter()
    codes = torch.cat(list(quantizer.encode_stream(chunks(total, seed, first_index=1_000_000))))
    seconds = time.perf_counter() - started
    print(
        json.dumps(
            {
                "rows": total,
                "seconds": round(seconds, 1),
                "rows_per_second": round(total / seconds),
                "peak_rss_mb": round(peak_rss_mb(), 1),
                "rss_after_load_mb": round(rss_loaded, 1),
                "collision_rate": SemanticIds.from_codes(codes, quantizer.codebook_sizes).diagnostics()[
                    "collision_rate"
                ],
            }
        )
    )


def fit_one(spec: dict, x: torch.Tensor) -> tuple[Quantizer, dict]:
    started = time.perf_counter()
    quantizer = build("quantizer", spec).fit(x)
    fit_seconds = time.perf_counter() - started
    codes = quantizer.encode(x)
    report = SemanticIds.from_codes(codes, quantizer.codebook_sizes, quantizer).diagnostics(x)
    keep = (
        "utilisation",
        "entropy_normalised",
        "collision_rate",
        "unique_tuples",
        "max_items_per_tuple",
        "reconstruction_rmse",
        "relative_rmse",
        "dedup_level_size",
    )
    result = {"spec": spec, "fit_seconds": round(fit_seconds, 1), **{k: report[k] for k in keep}}
    print(json.dumps(result), flush=True)
    return quantizer, result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=100_000, help="rows to fit on")
    parser.add_argument("--encode-n", type=int, default=1_000_000, help="rows to stream-encode")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--only", nargs="*", default=None, help="subset of: rq_kmeans rq_gmm res_kmeans_fsq")
    parser.add_argument("--out", default=str(Path(__file__).parent / "results" / "sid_speed.json"))
    parser.add_argument("--encode-only", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    if args.encode_only:
        encode_only(args.encode_only, args.encode_n, args.seed)
        return
    x = torch.cat(list(chunks(args.n, args.seed)))
    common = {"seed": args.seed, "threads": args.threads}
    specs = {
        "rq_kmeans": {"name": "rq_kmeans", "levels": 3, "codebook_size": 256, **common},
        "rq_gmm": {"name": "rq_gmm", "levels": 3, "codebook_size": 256, **common},
        "res_kmeans_fsq": {
            "name": "res_kmeans_fsq",
            "kmeans_levels": 2,
            "codebook_size": 256,
            "fsq_dims": 13,
            "fsq_levels": 2,
            **common,
        },
    }
    result = {
        "benchmark": "sid_speed",
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "machine": f"{platform.machine()}, {os.cpu_count()} cores visible, load average "
        f"{os.getloadavg()[0]:.1f} at start (shared machine)",
        "threads": args.threads,
        "fit_rows": args.n,
        "dim": DIM,
        "note": "encode_stream runs in a fresh process that loads the saved quantizer; its peak RSS "
        "includes ~240 MB of torch/faiss imports and the generation of 65,536-row synthetic chunks",
        "quantizers": {},
    }
    with tempfile.TemporaryDirectory() as tmp:
        for key, spec in specs.items():
            if args.only and key not in args.only:
                continue
            quantizer, entry = fit_one(spec, x)
            quantizer.save(Path(tmp) / key)
            child = subprocess.run(
                [
                    sys.executable,
                    __file__,
                    "--encode-only",
                    str(Path(tmp) / key),
                    "--encode-n",
                    str(args.encode_n),
                    "--threads",
                    str(args.threads),
                    "--seed",
                    str(args.seed),
                ],
                capture_output=True,
                text=True,
                check=True,
            )
            entry["encode_stream"] = json.loads(child.stdout.strip().splitlines()[-1])
            print(json.dumps({key: entry["encode_stream"]}), flush=True)
            result["quantizers"][key] = entry
    result["load_average_end"] = round(os.getloadavg()[0], 1)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
