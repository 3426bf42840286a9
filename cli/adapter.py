"""Adapter commands: ``adapter build``, ``adapter decrypt`` and the top-level ``export``.

A thin shell over :meth:`p2p_local.api.Personalizer.build_adapter` and ``export`` and over
:func:`p2p_local.export.decrypt_export`. torch and the models are imported inside the commands.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape

from .common import JsonOpt, PassFileOpt, UserOpt, console, read_passphrase
from .vault import open_personalizer

CheckpointOpt = Annotated[
    Path | None,
    typer.Option(
        "--checkpoint",
        help="A hypernetwork checkpoint (directory or .safetensors file) to use instead of the "
        "installed one.",
    ),
]
TaskOpt = Annotated[
    str | None,
    typer.Option("--task", "-t", help="What the profile is for, in words (default: chat)."),
]
ExportPassOpt = Annotated[
    Path | None,
    typer.Option(
        "--export-passphrase-file",
        help="Encrypt (or decrypt) the export with the passphrase in this file (first line). "
        "Default: P2P_LOCAL_EXPORT_PASSPHRASE, else the vault passphrase.",
        dir_okay=False,
    ),
]


def build(
    user: UserOpt = "default",
    per_query: Annotated[
        str | None,
        typer.Option(
            "--per-query",
            "-q",
            help="Build the adapter for this query (its profile adds the history items "
            "retrieved for it; not cached).",
        ),
    ] = None,
    task: TaskOpt = None,
    checkpoint: CheckpointOpt = None,
    rebuild: Annotated[
        bool, typer.Option("--rebuild", help="Generate again even if one is cached.")
    ] = False,
    passphrase_file: PassFileOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Generate USER's personalized LoRA from their profile with the hypernetwork."""
    with open_personalizer(user, passphrase_file) as p:
        if checkpoint is not None:
            p.configure_adapter(checkpoint=checkpoint)
        result = p.build_adapter(per_query, task=task, rebuild=rebuild)
    ad = result.adapter
    t = ad.targets
    info = {
        "user": user,
        "kind": "per-query" if result.per_query else "per-user",
        "cached": result.cached,
        "checkpoint_id": ad.checkpoint_id,
        "base_model": ad.base_model,
        "modules": list(t.module_names),
        "layers": t.n_layers,
        "rank": t.rank,
        "alpha": t.alpha,
        "rslora": t.rslora,
        "parameters": t.n_params(),
        "profile_seconds": round(result.profile_seconds, 4),
        "generate_seconds": round(result.generate_seconds, 4),
    }
    if as_json:
        console.print_json(json.dumps(info))
        return
    how = (
        "read back from the vault cache (encrypted)"
        if result.cached
        else f"profile {result.profile_seconds:.2f} s, generation "
        f"{1000 * result.generate_seconds:.1f} ms"
    )
    console.print(
        f"built the {info['kind']} adapter for {escape(user)}: {', '.join(t.module_names)} x "
        f"{t.n_layers} layers, rank {t.rank}, alpha {t.alpha:g}"
        f"{' (rsLoRA)' if t.rslora else ''}, {t.n_params():,} parameters\n"
        f"[dim]checkpoint {escape(ad.checkpoint_id)} for {escape(ad.base_model)}; {how}[/]",
        highlight=False,
        soft_wrap=True,
    )


def export(
    format: Annotated[
        str, typer.Option("--format", "-f", help="peft (a PEFT adapter) or gguf (llama.cpp).")
    ],
    out: Annotated[Path, typer.Option("--out", "-o", help="Where to write the export.")],
    user: UserOpt = "default",
    plaintext: Annotated[
        bool,
        typer.Option(
            "--plaintext",
            help="Write the files PEFT / llama.cpp load directly (a PEFT directory or a .gguf "
            "file). Without it the export is one encrypted file: the adapter encodes your "
            "profile.",
        ),
    ] = False,
    task: TaskOpt = None,
    checkpoint: CheckpointOpt = None,
    export_passphrase_file: ExportPassOpt = None,
    passphrase_file: PassFileOpt = None,
) -> None:
    """Export USER's personalized adapter (encrypted unless --plaintext)."""
    export_pass = None
    if not plaintext:
        export_pass = _export_passphrase(export_passphrase_file)
    with open_personalizer(user, passphrase_file) as p:
        if checkpoint is not None:
            p.configure_adapter(checkpoint=checkpoint)
        result = p.export(format, out, plaintext=plaintext, passphrase=export_pass, task=task)
    if result.encrypted:
        whose = "the export passphrase" if export_pass else "your vault passphrase"
        note = (
            f"encrypted with {whose}; `p2p-local adapter decrypt {escape(str(result.path))} "
            "--out PATH` writes the plaintext files"
        )
    else:
        note = "PLAINTEXT: anyone with this file can read what the adapter encodes"
    console.print(
        f"wrote the {format} adapter to {escape(str(result.path))} "
        f"({result.n_bytes:,} bytes)\n[dim]{note}[/]",
        highlight=False,
        soft_wrap=True,
    )


def decrypt(
    src: Annotated[Path, typer.Argument(help="An encrypted export.", dir_okay=False)],
    out: Annotated[
        Path,
        typer.Option("--out", "-o", help="The PEFT directory or .gguf file to write."),
    ],
    export_passphrase_file: ExportPassOpt = None,
) -> None:
    """Turn an encrypted export into the plaintext files PEFT / llama.cpp load."""
    from p2p_local.export import decrypt_export

    passphrase = _export_passphrase(export_passphrase_file) or read_passphrase(None)
    result = decrypt_export(src, out, passphrase)
    console.print(
        f"wrote the plaintext {result.format} adapter to {escape(str(result.path))}",
        highlight=False,
    )


def _export_passphrase(path: Path | None) -> str | None:
    """The export passphrase from a file or P2P_LOCAL_EXPORT_PASSPHRASE; None means the
    vault's passphrase is used."""
    if path is not None:
        return read_passphrase(path)
    return os.environ.get("P2P_LOCAL_EXPORT_PASSPHRASE") or None


def register(app: typer.Typer) -> None:
    group = typer.Typer(
        help="Your personalized adapter: the LoRA the hypernetwork makes from your profile.",
        no_args_is_help=True,
    )
    group.command("build")(build)
    group.command("decrypt")(decrypt)
    app.add_typer(group, name="adapter")
    app.command("export")(export)
