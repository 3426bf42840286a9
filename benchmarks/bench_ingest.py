"""Ingest throughput and peak memory: JSONL items of ~300 bytes into a fresh vault.

    .venv/bin/python benchmarks/bench_ingest.py [--sizes 100000 1000000]

Each size runs in its own subprocess (so peak RSS is that run's own), which creates a vault
(KDF time excluded), then times ``Personalizer.ingest_file`` alone. Writes
``benchmarks/results/ingest.json``: items/s at every size and peak RSS, whose flatness from
the smallest to the largest file shows that memory does not grow with the file.
Wall-clock rates depend on what else runs on the machine (the load average is recorded);
items per CPU-second are less sensitive to that.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

RESULTS = Path(__file__).resolve().parent / "results" / "ingest.json"
TARGET_ITEMS_PER_S = 20_000
WORDS = (
    "bread rye starter crumb crust oven proof flour water salt ride coast harbour lighthouse "
    "headwind chain tyre book chapter film review quiet rain kitchen coffee neighbour jam"
).split()


def make_file(path: Path, n: int, seed: int = 0) -> int:
    """``n`` JSONL items of ~300 bytes (text, pairs and ratings); returns the file size."""
    rng = random.Random(seed)
    with open(path, "w", encoding="utf-8") as fh:
        for i in range(n):
            words = " ".join(rng.choice(WORDS) for _ in range(36))
            kind = i % 3
            obj: dict[str, Any]
            if kind == 0:
                obj = {"text": f"{i} {words}", "time": "2025-01-01T00:00:00Z"}
            elif kind == 1:
                obj = {"input": f"question {i}: {words[:90]}", "output": words[90:]}
            else:
                obj = {"text": f"review {i} {words}", "score": rng.randint(1, 5), "label": "book"}
            fh.write(json.dumps(obj) + "\n")
    return path.stat().st_size


def peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB


def current_rss_mib() -> float:
    with open("/proc/self/status") as fh:
        line = next(x for x in fh if x.startswith("VmRSS:"))
    return int(line.split()[1]) / 1024


def child(path: Path, home: Path) -> dict[str, float]:
    os.environ["P2P_LOCAL_HOME"] = str(home)
    # The passphrase KDF (64 MiB by default) runs once before ingest and is not measured:
    # a cheap one keeps it from dominating the process's peak memory.
    os.environ["P2P_LOCAL_KDF"] = "argon2id:m=256,t=1,p=1"
    from p2p_local.api import Personalizer

    p = Personalizer.create("bench", "benchmark passphrase")
    before = current_rss_mib()
    samples = [before]
    start, cpu = time.perf_counter(), time.process_time()
    report = p.ingest_file(path, progress=lambda done, total: samples.append(current_rss_mib()))
    seconds, cpu = time.perf_counter() - start, time.process_time() - cpu
    count = p.count()
    p.close()
    assert report.added == count and report.rejected == 0, report
    return {
        "items": count,
        "seconds": round(seconds, 3),
        "items_per_s": round(count / seconds),
        "cpu_seconds": round(cpu, 3),
        "items_per_cpu_s": round(count / cpu),
        "mb_per_s": round(path.stat().st_size / seconds / 1e6, 2),
        "rss_before_ingest_mib": round(before, 1),
        "max_rss_during_ingest_mib": round(max(samples), 1),
        "peak_rss_mib": round(peak_rss_mib(), 1),
        "vault_bytes": sum(f.stat().st_size for f in (home / "users" / "bench").iterdir()),
        "load_average_1min_after": round(os.getloadavg()[0], 2),
    }


def run_size(n: int, workdir: Path) -> dict[str, float]:
    path = workdir / f"items-{n}.jsonl"
    size = make_file(path, n)
    home = workdir / f"home-{n}"
    out = subprocess.run(
        [sys.executable, __file__, "--child", str(path), str(home)],
        check=True,
        capture_output=True,
        text=True,
    )
    result = json.loads(out.stdout.strip().splitlines()[-1])
    result["file_bytes"] = size
    result["bytes_per_item"] = round(size / n)
    path.unlink()
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000, 1_000_000])
    parser.add_argument("--child", nargs=2, metavar=("FILE", "HOME"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(child(Path(args.child[0]), Path(args.child[1]))))
        return
    runs = {}
    with tempfile.TemporaryDirectory(prefix="bench-ingest-") as tmp:
        for n in args.sizes:
            runs[str(n)] = run_size(n, Path(tmp))
            print(f"{n:>9} items: {runs[str(n)]}", flush=True)
    sizes = sorted(args.sizes)
    smallest, largest = runs[str(sizes[0])], runs[str(sizes[-1])]
    through = runs.get("100000", largest)
    result = {
        "command": "python benchmarks/bench_ingest.py --sizes " + " ".join(map(str, sizes)),
        "machine": {
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            "platform": platform.platform(),
        },
        "target_items_per_s": TARGET_ITEMS_PER_S,
        "throughput_items_per_s": through["items_per_s"],
        "throughput_items_per_cpu_s": through["items_per_cpu_s"],
        "meets_target": through["items_per_s"] >= TARGET_ITEMS_PER_S,
        "peak_rss_mib_smallest": smallest["peak_rss_mib"],
        "peak_rss_mib_largest": largest["peak_rss_mib"],
        "peak_rss_ratio_largest_to_smallest": round(
            largest["peak_rss_mib"] / smallest["peak_rss_mib"], 3
        ),
        "runs": runs,
    }
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {RESULTS}")


if __name__ == "__main__":
    main()
