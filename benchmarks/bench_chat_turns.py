"""A growing chat conversation: time per turn with the context kept vs started empty.

    .venv/bin/python benchmarks/bench_chat_turns.py [--turns 8] [--tokens 32] [--repeats 3]

Default base model (SmolLM2-135M-Instruct Q4_1 GGUF) through the engine, as ``p2p-local chat``
uses it. One conversation of ``--turns`` user messages, greedy replies of at most ``--tokens``
tokens, run once with ``keep_context=True`` (the REPL's setting: llama.cpp reuses the KV cache of
the prompt prefix the turn shares with the previous one) and once with ``keep_context=False``
(every reply evaluates the whole conversation); the two runs alternate ``--repeats`` times and
each turn's ratio is taken per pair (the machine is shared and noisy), then the median. The
prompt tokens each turn evaluates are counted (``Llama.eval``). Writes
``benchmarks/results/chat_turns.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results" / "chat_turns.json"
QUESTIONS = [
    "I want to start running. How often should I go in the first month?",
    "What should I eat before a morning run?",
    "My knees hurt after running downhill. Any advice?",
    "How do I know if my shoes are worn out?",
    "Is it fine to run in the rain?",
    "How should I breathe while running?",
    "What is a good first race distance?",
    "How long before that race should I rest?",
    "Should I stretch before or after?",
    "How do I stay motivated in winter?",
    "What is interval training?",
    "How many rest days a week do I need?",
]


def conversation(engine, settings, turns: int, keep: bool, evaluated: list[int]) -> list[dict]:
    """Run one conversation; per turn: wall seconds and prompt tokens evaluated."""
    from p2p_local.runtime.base import Message

    messages: list[Message] = [{"role": "system", "content": "You are a friendly running coach."}]
    engine.backend.reset()  # each conversation starts cold
    rows = []
    for question in QUESTIONS[:turns]:
        messages.append({"role": "user", "content": question})
        evaluated.clear()
        t0 = time.perf_counter()
        answer = engine.chat(messages, settings, keep_context=keep)
        seconds = time.perf_counter() - t0
        rows.append({"seconds": seconds, "prompt_tokens_evaluated": evaluated[0],
                     "prompt_tokens": engine.prompt_tokens(messages)})
        messages.append({"role": "assistant", "content": answer})
    return rows


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--turns", type=int, default=8)
    ap.add_argument("--tokens", type=int, default=32)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--out", type=Path, default=RESULTS)
    args = ap.parse_args(argv)
    if not 1 <= args.turns <= len(QUESTIONS):
        ap.error(f"--turns must be 1..{len(QUESTIONS)}")

    from p2p_local.engine import Engine
    from p2p_local.runtime.base import GenerationSettings
    from p2p_local.runtime.llamacpp import decode_calls

    settings = GenerationSettings(max_tokens=args.tokens, temperature=0.0)
    engine = Engine("llamacpp", "base")
    backend = engine.load()
    out: dict = {
        "benchmark": "chat_turns",
        "command": "python benchmarks/bench_chat_turns.py " + " ".join(argv or sys.argv[1:]),
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform(),
                    "python": platform.python_version(),
                    "loadavg_start": list(os.getloadavg())},
        "settings": {"turns": args.turns, "max_tokens": args.tokens, "repeats": args.repeats},
    }
    runs: dict[str, list[list[dict]]] = {"kept": [], "empty": []}
    with decode_calls(backend) as evaluated:  # type: ignore[arg-type]
        conversation(engine, settings, 1, False, evaluated)  # warm-up
        for _ in range(args.repeats):
            runs["kept"].append(conversation(engine, settings, args.turns, True, evaluated))
            runs["empty"].append(conversation(engine, settings, args.turns, False, evaluated))
    engine.close()

    per_turn = []
    for turn in range(args.turns):
        ratios = [e[turn]["seconds"] / k[turn]["seconds"]
                  for k, e in zip(runs["kept"], runs["empty"], strict=True)]
        per_turn.append({
            "turn": turn + 1,
            "prompt_tokens": runs["empty"][0][turn]["prompt_tokens"],
            "evaluated_kept": runs["kept"][0][turn]["prompt_tokens_evaluated"],
            "evaluated_empty": runs["empty"][0][turn]["prompt_tokens_evaluated"],
            "seconds_kept_median": statistics.median(r[turn]["seconds"] for r in runs["kept"]),
            "seconds_empty_median": statistics.median(r[turn]["seconds"] for r in runs["empty"]),
            "speedup_median": statistics.median(ratios),
        })
    out["per_turn"] = per_turn
    out["last_turn_speedup"] = per_turn[-1]["speedup_median"]
    out["machine"]["loadavg_end"] = list(os.getloadavg())
    out["written_at"] = time.strftime("%Y-%m-%dT%H:%M:%S%z")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(out, indent=1) + "\n")
    for row in per_turn:
        print(f"turn {row['turn']}: {row['prompt_tokens']} prompt tokens, evaluated "
              f"{row['evaluated_kept']} kept / {row['evaluated_empty']} empty; "
              f"{row['seconds_kept_median']:.2f} s vs {row['seconds_empty_median']:.2f} s "
              f"({row['speedup_median']:.2f}x)")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
