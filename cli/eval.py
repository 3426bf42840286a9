"""The eval command: ``p2p-local eval --data PATH_OR_NAME`` compares P2P with its baselines on
held-out users and writes a Markdown table and a JSON file.

A thin shell over :func:`p2p_local.eval.harness.run_evaluation`; torch, transformers and
llama.cpp are imported inside the command.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape

from .common import JsonOpt, console, err_console

DEFAULT_METHODS = ("base,rag,pag,full-history,p2p,p2p-per-query,p2p-shuffled,"
                   "p2p-per-query-shuffled,p2p-random,p2p-summary-only,"
                   "p2p-retrieval-only")


def evaluate(
    data: Annotated[str, typer.Option(
        "--data", "-d", help="A built-in task (movielens, shakespeare, office, fortunes) or a "
        "LaMP questions JSON file.")],
    outputs: Annotated[Path | None, typer.Option(
        "--outputs", help="LaMP outputs (gold answers) file; default: the questions file's "
        "name with 'questions' replaced by 'outputs'.", dir_okay=False)] = None,
    split: Annotated[str | None, typer.Option(
        "--split", help="random | ood: the test users of that split (as training splits); "
        "all: every user. Default: random for built-in tasks, all for LaMP files.")] = None,
    split_file: Annotated[Path | None, typer.Option(
        "--split-file", help="Use a saved split (JSON, e.g. the training data folder's "
        "splits/<task>.json).", dir_okay=False)] = None,
    held_out: Annotated[str, typer.Option(
        "--held-out", help="test (default): the split's test users; val: its validation "
        "users, to choose settings such as --adapter-scale without looking at the test users.")
    ] = "test",
    methods: Annotated[str | None, typer.Option(
        "--methods", "-m", help="Comma-separated methods, or 'all': base, rag, pag, "
        "full-history, mt-lora, oppu, p2p, p2p-per-query, p2p-shuffled, "
        "p2p-per-query-shuffled, p2p-random, p2p-summary-only, p2p-retrieval-only. "
        "Default: all but oppu (it trains a LoRA per user); mt-lora is included when an "
        "MT-LoRA is given or installed.")] = None,
    users: Annotated[int | None, typer.Option(
        "--users", "-n", min=1, help="Evaluate at most N held-out users (a seeded sample).")
    ] = None,
    k: Annotated[int, typer.Option(
        "--k", min=0, max=32, help="History items retrieved per query (RAG, PAG, P2P).")] = 2,
    out: Annotated[Path | None, typer.Option(
        "--out", "-o", help="Folder for the cached answers and results.json / results.md "
        "(a run there resumes). Default: eval-out/<task>-<split>.")] = None,
    checkpoint: Annotated[Path | None, typer.Option(
        "--checkpoint", help="Hypernetwork checkpoint (default: the installed one).")] = None,
    mt_lora: Annotated[Path | None, typer.Option(
        "--mt-lora", help="MT-LoRA adapter: a PEFT folder or an mt_lora training run folder "
        "(also OPPU's starting point). Default: the installed one (`p2p-local models list`, "
        "role mt-lora).")] = None,
    max_tokens: Annotated[int | None, typer.Option(
        "--max-tokens", min=1, max=4096, help="Answer length in tokens (default: 8 for "
        "ratings, 16 for labels, 64 for text).")] = None,
    repeat_penalty: Annotated[float, typer.Option(
        "--repeat-penalty", min=1.0, max=2.0, help="Repetition penalty of the greedy decoding, "
        "the same for every method (1 = off, the default; 1.1 stops small models looping).")
    ] = 1.0,
    adapter_scale: Annotated[float, typer.Option(
        "--adapter-scale", min=0.0, max=4.0, help="Multiply every P2P adapter's update by this "
        "(1 = as generated, the default). Choose it with --held-out val.")] = 1.0,
    queries: Annotated[int, typer.Option(
        "--queries", min=1, help="Held-out queries per test user of a built-in task (at most "
        "N of their items, most recent first where items have a time; the history is the rest, "
        "so an OOD split computed here rather than read from --split-file depends on it). "
        "Default 8, the shipped recipes' data.max_queries.")] = 8,
    backend: Annotated[str, typer.Option(
        "--backend", help="llamacpp (fast, default) or hf (transformers + PEFT).")
    ] = "llamacpp",
    n_ctx: Annotated[int, typer.Option(
        "--n-ctx", min=64, help="Context window in tokens (prompts are fitted into it).")
    ] = 2048,
    threads: Annotated[int | None, typer.Option(
        "--threads", min=1, help="CPU threads for llama.cpp (default: all cores).")] = None,
    summaries: Annotated[bool, typer.Option(
        "--summaries/--no-summaries", help="Write an LLM summary of each user (PAG and the "
        "P2P profiles use it; ~5 s a user on 2 cores).")] = True,
    oppu_steps: Annotated[int, typer.Option(
        "--oppu-max-steps", min=1, help="Cap on OPPU's training steps per user.")] = 64,
    seed: Annotated[int, typer.Option("--seed", min=0, help=(
        "Seeds the user sample, the shuffled profile's donors and random profiles."))] = 0,
    split_seed: Annotated[int, typer.Option(
        "--split-seed", min=0, help="The split's seed (training's data.split_seed).")] = 0,
    progress: Annotated[bool, typer.Option(
        "--progress/--no-progress", help="Show progress bars (on a terminal).")] = True,
    as_json: JsonOpt = False,
) -> None:
    """Evaluate P2P against Base, RAG, PAG, Full History, MT-LoRA and OPPU on held-out users.

    Writes results.md (a table like the P2P paper's) and results.json to --out; answers are
    cached there per method and query, so an interrupted run continues where it stopped.
    """
    from p2p_local.baselines import MethodSettings, parse_methods
    from p2p_local.eval.harness import EvalSettings, is_builtin, run_evaluation
    from p2p_local.registry import default_path

    has_mt_lora = mt_lora is not None or default_path("mt-lora") is not None
    chosen = methods or DEFAULT_METHODS + (",mt-lora" if has_mt_lora else "")
    if not methods and not summaries:
        chosen = chosen.replace(",p2p-summary-only", "")
    settings = EvalSettings(
        data=data,
        outputs=str(outputs) if outputs else None,
        split=split,
        split_file=str(split_file) if split_file else None,
        held_out=held_out,
        methods=tuple(parse_methods(chosen)),
        users=users,
        queries=queries,
        split_seed=split_seed,
        backend=backend,
        threads=threads,
        method=MethodSettings(
            k=k, n_ctx=n_ctx, max_tokens=max_tokens, summaries=summaries,
            checkpoint=str(checkpoint) if checkpoint else None,
            mt_lora=str(mt_lora) if mt_lora else None, oppu_max_steps=oppu_steps, seed=seed,
            repeat_penalty=repeat_penalty, adapter_scale=adapter_scale,
        ),
    )
    if out is None:
        name = data if is_builtin(data) else Path(data).stem
        shown_split = split or ("random" if is_builtin(data) else "all")
        out = Path("eval-out") / f"{name}-{shown_split}"

    def log(text: str) -> None:
        err_console.print(escape(text), highlight=False)

    report = run_evaluation(settings, out_dir=out, progress=progress, log=log)
    if as_json:
        typer.echo(json.dumps(report.summary()))
        return
    console.print(report.markdown(), markup=False, highlight=False, soft_wrap=True)
    console.print(f"results: {escape(str(out / 'results.md'))}, "
                  f"{escape(str(out / 'results.json'))}")


def register(app: typer.Typer) -> None:
    app.command("eval")(evaluate)
