"""What shape are a generation task's answers? Length, variety and ROUGE-1 precision / recall
per method, from quality runs' cached answers.

    .venv/bin/python benchmarks/bench_replies.py \\
        benchmarks/results/office_anchor/quality_office_random.json [MORE.json ...] \\
        [--methods base,mt-lora,p2p] --out benchmarks/results/office_anchor/replies_office.json

For each results file (a ``bench_quality.py`` run of a generation task) and each of its methods
it reads the answers from this machine's evaluation cache (refusing unless they reproduce the
file's ROUGE-1, as ``bench_paired.py`` does) and reports: words per answer and per gold reply
(whitespace split), the number of distinct answers, the share of the three most frequent
ones, and ROUGE-1 precision, recall and F-measure averaged over queries (``rouge-score``, no
stemming, as the evaluation scores them). A method whose answers are much shorter than the
gold replies loses ROUGE-1 recall that precision cannot make up. Writes one JSON file, each
method's figures keyed ``<results file>:<method>``.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections import Counter
from pathlib import Path
from statistics import mean
from typing import TYPE_CHECKING, Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_paired import cached_answers  # noqa: E402

if TYPE_CHECKING:
    from p2p_local.eval.paired import Answer


def reply_shape(answers: list[Answer]) -> dict[str, float]:
    """Length, variety and ROUGE-1 precision / recall / F of one method's answers."""
    from rouge_score import rouge_scorer

    scorer = rouge_scorer.RougeScorer(["rouge1"], use_stemmer=False)
    preds = [str(a["prediction"] or "") for a in answers]
    golds = [str(a["gold"]) for a in answers]
    parts = [scorer.score(g, p)["rouge1"] if p else None for p, g in zip(preds, golds, strict=True)]
    top3 = sum(n for _, n in Counter(preds).most_common(3))
    return {
        "n": len(preds),
        "words_per_answer": mean(len(p.split()) for p in preds),
        "words_per_gold": mean(len(g.split()) for g in golds),
        "distinct_answers": len(set(preds)),
        "top3_share": top3 / len(preds),
        "rouge1_precision": mean(s.precision if s else 0.0 for s in parts),
        "rouge1_recall": mean(s.recall if s else 0.0 for s in parts),
        "rouge1": mean(s.fmeasure if s else 0.0 for s in parts),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("results", nargs="+", type=Path, help="bench_quality.py results files")
    parser.add_argument("--methods", default="", help="comma list (default: every method)")
    parser.add_argument("--out", type=Path, required=True, help="the JSON file to write")
    args = parser.parse_args(argv)
    wanted = [m for m in args.methods.split(",") if m]
    report: dict[str, Any] = {"command": "python benchmarks/bench_replies.py " + " ".join(
        argv if argv is not None else sys.argv[1:]), "methods": {}}
    for path in args.results:
        results = json.loads(path.read_text())
        if results.get("kind") != "generation":
            raise SystemExit(f"{path}: not a generation task ({results.get('kind')!r})")
        for method in results["results"]:
            if wanted and method not in wanted:
                continue
            shape = reply_shape(list(cached_answers(results, method).values()))
            report["methods"][f"{path}:{method}"] = shape
            print(f"{path}:{method}: " + ", ".join(
                f"{k} {v:.3f}" if isinstance(v, float) else f"{k} {v}" for k, v in shape.items()))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
