"""The loss log (``loss.jsonl``) and the loss-curve picture (``loss.png``).

Owns one JSON object a line: ``{"step", "loss", "ce", "reg", "lr", "grad_norm", "tokens",
"seconds", ...}`` for training windows and ``{"step", "val_ce", "val_ce_shuffled", ...}`` for
held-out evaluations; truncating the log back to a checkpoint's step on resume (so a resumed run
writes the same log as an uninterrupted one); and drawing the curve with matplotlib (Agg, no
display needed). Does not own computing the numbers (trainer.py).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

LOG_FILE = "loss.jsonl"
PLOT_FILE = "loss.png"


class LossLog:
    """Append-only JSONL log of one run (written by the main process only)."""

    def __init__(self, out_dir: Path) -> None:
        self.path = Path(out_dir) / LOG_FILE

    def rows(self) -> list[dict[str, Any]]:
        if not self.path.is_file():
            return []
        out = []
        for line in self.path.read_text(encoding="utf-8").splitlines():
            if line.strip():
                try:
                    out.append(json.loads(line))
                except json.JSONDecodeError:  # a line cut by a crash: the rest is still good
                    continue
        return out

    def truncate(self, step: int) -> None:
        """Keep only the rows up to and including ``step`` (resume from that checkpoint)."""
        kept = [r for r in self.rows() if int(r.get("step", 0)) <= step]
        self.reset(kept)

    def reset(self, rows: list[dict[str, Any]] | None = None) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_suffix(".jsonl.tmp")
        tmp.write_text("".join(json.dumps(r) + "\n" for r in rows or []), encoding="utf-8")
        os.replace(tmp, self.path)

    def append(self, row: dict[str, Any]) -> None:
        with open(self.path, "a", encoding="utf-8") as fh:
            fh.write(json.dumps(row) + "\n")
            fh.flush()


def plot_loss(rows: list[dict[str, Any]], path: Path, title: str = "") -> Path | None:
    """Draw training loss / CE and held-out CE against the step; None when nothing to draw."""
    train = [r for r in rows if "loss" in r]
    val = [r for r in rows if "val_ce" in r]
    if not train and not val:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4), dpi=110)
    if train:
        steps = [r["step"] for r in train]
        ax.plot(steps, [r["loss"] for r in train], label="train loss (smoothed CE + reg)",
                color="tab:blue", alpha=0.8)
        ax.plot(steps, [r["ce"] for r in train], label="train CE", color="tab:cyan", alpha=0.8)
    if val:
        steps = [r["step"] for r in val]
        ax.plot(steps, [r["val_ce"] for r in val], "o-", label="held-out CE (own profile)",
                color="tab:red")
        if all("val_ce_shuffled" in r for r in val):
            ax.plot(steps, [r["val_ce_shuffled"] for r in val], "s--",
                    label="held-out CE (shuffled profiles)", color="tab:orange")
    ax.set_xlabel("step")
    ax.set_ylabel("loss (nats / target token)")
    if title:
        ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    path = Path(path)
    tmp = path.with_name(path.stem + ".tmp.png")
    fig.savefig(tmp)
    plt.close(fig)
    os.replace(tmp, path)
    return path
