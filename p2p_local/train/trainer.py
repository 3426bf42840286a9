"""The training loop, shared by the three modes (P2P hypernetwork, MT-LoRA, OPPU).

Owns :class:`Trainer`: per step, each process takes its slice of the step's global batch
(data.py), the trainable (hypernetwork or plain LoRA, wrapped by ``accelerate`` for DDP) turns
the examples' profile embeddings into LoRA weights, forward hooks
(:class:`~p2p_local.hypernet.inject.LoraInjector`) add them per example inside the frozen base
model, and the loss is cross-entropy with label smoothing on the target tokens only plus
``reg_weight * (mean(A^2) + mean(B^2))`` (optionally plus terms on rating answers: a CE over
the rating scale and its expected absolute error, :class:`RatingScale`; a hinge preferring
the own profile to another user's; an anchor holding some tasks' adapters to those of the
network the run started from, while it trains the other tasks). AdamW, linear
warmup then linear decay, global gradient-norm clipping, optional gradient checkpointing, bf16
autocast on a GPU. It also runs the held-out loss and greedy rating MAE (own profile vs
shuffled profiles), resumable checkpoints (state.py), the loss log and picture (metrics.py),
the progress bar, and writes the result: a hypernetwork
checkpoint (``hypernet/checkpoint.py``) or a PEFT adapter, plus ``training.json``.

The same code runs on one CPU / GPU and under ``accelerate launch`` (DDP): gradients are
synchronised by DDP, metrics reduced through ``accelerate``; nothing here all-reduces by hand.
Does not own data preparation (profiles_cache.py) or the command line (run.py, cli/train.py).
"""

from __future__ import annotations

import copy
import json
import math
import os
import platform
import random
import time
from collections.abc import Sequence
from contextlib import nullcontext
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from p2p_local.adapter import LoraAdapter
from p2p_local.errors import TrainingError
from p2p_local.hypernet.inject import LoraInjector
from p2p_local.hypernet.model import HyperNetwork
from p2p_local.train.config import TrainConfig
from p2p_local.train.data import (
    IGNORE_INDEX,
    Batch,
    Draw,
    Encoded,
    TaskSampler,
    TrainData,
    collate,
    encode_example,
)
from p2p_local.train.metrics import PLOT_FILE, LossLog, plot_loss
from p2p_local.train.models import BaseModel, PlainLora, build_trainable, targets_for
from p2p_local.train.state import (
    SavedState,
    finish_checkpoint,
    latest_checkpoint,
    load_training_state,
    read_state,
    save_training_state,
    step_dir,
)

METADATA_FILE = "training.json"
METADATA_FORMAT = "p2p-local-training"
RESULT_DIRS = {"p2p": "hypernet", "mt_lora": "adapter", "oppu": "adapter"}
RatedRows = dict[str, tuple[list[int], list[float]]]  # task -> (batch rows, their ratings)


@dataclass(frozen=True)
class TrainResult:
    """What a call to :meth:`Trainer.fit` produced.

    steps: optimizer steps done in total (over all resumed invocations); completed: whether
    ``max_steps`` was reached; result_path: the hypernetwork checkpoint (p2p) or PEFT adapter
    folder; the losses are the last logged / evaluated values (None when never computed).
    """

    out_dir: Path
    steps: int
    completed: bool
    final_train_loss: float | None
    final_train_ce: float | None
    final_val_ce: float | None
    final_val_ce_shuffled: float | None
    wall_seconds: float
    seconds_per_step: float | None
    result_path: Path | None
    metadata_path: Path | None


@dataclass
class LmLoss:
    loss: Tensor  # the objective (label-smoothed CE, mean over target tokens)
    n_tokens: int
    nll_rows: Tensor  # [batch] plain CE summed over each row's target tokens (detached unless
    #                   lm_loss was asked for row gradients)
    tokens_rows: Tensor  # [batch] target tokens per row
    first_logits: Tensor  # [batch, vocab] logits of each row's first target token

    @property
    def nll_sum(self) -> Tensor:
        """Plain CE summed over all target tokens (detached)."""
        return self.nll_rows.detach().sum()

    @property
    def row_ce(self) -> Tensor:
        """Plain CE per row, averaged over its target tokens (differentiable with row_grad)."""
        return self.nll_rows / self.tokens_rows.clamp(min=1)


def lm_loss(model: nn.Module, batch: Batch, label_smoothing: float,
            row_grad: bool = False) -> LmLoss:
    """Cross-entropy of the next token on target positions only.

    The LM head runs only where a label exists (the prompt's logits are never computed).
    ``row_grad`` keeps the per-row CE differentiable (the contrastive term needs it).
    """
    causal_lm: Any = model  # a transformers causal LM (typed as a plain nn.Module here)
    decoder, lm_head = causal_lm.get_decoder(), causal_lm.get_output_embeddings()
    hidden = decoder(
        input_ids=batch.input_ids, attention_mask=batch.attention_mask, use_cache=False
    ).last_hidden_state
    labels = batch.labels[:, 1:]
    mask = labels != IGNORE_INDEX
    logits = lm_head(hidden[:, :-1][mask]).float()
    target = labels[mask]
    if target.numel() == 0:
        raise TrainingError("a batch has no target tokens: raise run.max_seq_len")
    loss = F.cross_entropy(logits, target, label_smoothing=label_smoothing)
    token_nll = F.cross_entropy(logits if row_grad else logits.detach(), target,
                                reduction="none")
    row_of_token = mask.nonzero(as_tuple=True)[0]
    nll_rows = torch.zeros(mask.shape[0], dtype=token_nll.dtype, device=token_nll.device)
    nll_rows.index_add_(0, row_of_token, token_nll)
    tokens_rows = mask.sum(dim=1)
    first = (torch.cumsum(tokens_rows, 0) - tokens_rows).clamp(max=target.numel() - 1)
    return LmLoss(loss, int(target.numel()), nll_rows, tokens_rows, logits[first])


class RatingScale:
    """The rating tasks' answer tokens, for the rating term of the loss and the held-out MAE.

    A rating example's reply starts with one of its task's label tokens ("1".."5"); the
    probabilities of those tokens at the reply's first position, renormalised, are the model's
    rating distribution. Tasks whose labels are not single tokens or not numbers are left out.
    """

    def __init__(self, tokenizer: Any, tasks: list[str]) -> None:
        from p2p_local.datasets import TASKS

        self.scales: dict[str, tuple[list[int], dict[str, float]]] = {}
        for task in tasks:
            entry = TASKS.get(task)
            if entry is None or entry.spec.kind != "rating":
                continue
            labels = entry.spec.labels
            ids = [tokenizer(label, add_special_tokens=False)["input_ids"] for label in labels]
            try:
                values = {label: float(label) for label in labels}
            except ValueError:
                continue
            if labels and all(len(i) == 1 for i in ids):
                self.scales[task] = ([i[0] for i in ids], values)

    def gold(self, task: str, target: str) -> float | None:
        """The rating a reply gives; None when ``task`` is not a rating task here."""
        scale = self.scales.get(task)
        return None if scale is None else scale[1].get(target.strip())

    def distribution(self, task: str, first_logits: Tensor) -> tuple[Tensor, Tensor]:
        """``task``'s rating probabilities [rows, K] and the ratings they stand for [K]."""
        ids, values = self.scales[task]
        probs = torch.softmax(first_logits[:, ids].float(), dim=-1)
        return probs, torch.tensor(list(values.values()), device=probs.device)


def _index_of(values: Tensor, gold: Tensor) -> Tensor:
    """The position of each gold rating in the scale's ``values``."""
    return (values[None, :] == gold[:, None]).int().argmax(dim=1)


def rating_risk(probs: Tensor, values: Tensor, gold: Tensor) -> Tensor:
    """Expected absolute error per row: sum_k p(k) |value_k - gold| (minimised by putting all
    the mass on the median of the conditional rating distribution, the MAE-optimal answer)."""
    return (probs * (values[None, :] - gold[:, None]).abs()).sum(dim=-1)


def contrast_hinge(own: LmLoss, other: LmLoss, margin: float) -> Tensor:
    """Per row: max(0, margin + CE with the own profile - CE with another user's), CE
    averaged over the row's reply tokens. Zero once the own profile fits the reply better by
    ``margin`` nats a token; until then it pushes the two adapters apart on this reply."""
    return F.relu(margin + own.row_ce - other.row_ce)


class _Schedule:
    """Linear warmup to 1, then linear decay to ``min_ratio`` at ``total`` steps."""

    def __init__(self, warmup: int, total: int, min_ratio: float) -> None:
        self.warmup, self.total, self.min_ratio = warmup, total, min_ratio

    def __call__(self, step: int) -> float:
        if step < self.warmup:
            return (step + 1) / self.warmup
        span = max(1, self.total - self.warmup)
        frac = max(0.0, (self.total - step) / span)
        return self.min_ratio + (1.0 - self.min_ratio) * frac


def make_accelerator(config: TrainConfig) -> Any:
    """An ``accelerate.Accelerator`` for this run (one process, or one of a launched group)."""
    from datetime import timedelta

    from accelerate import Accelerator
    from accelerate.utils import InitProcessGroupKwargs

    run = config.run
    precision: str | None = run.mixed_precision
    if precision == "auto":
        if os.environ.get("ACCELERATE_MIXED_PRECISION"):
            precision = None  # `accelerate launch` / its config file decides
        else:
            cuda = torch.cuda.is_available() and not run.cpu
            precision = "bf16" if cuda and torch.cuda.is_bf16_supported() else "no"
    # data preparation on the main process may take long: the others wait at a barrier
    handler = InitProcessGroupKwargs(timeout=timedelta(hours=12))
    return Accelerator(cpu=run.cpu, mixed_precision=precision, kwargs_handlers=[handler])


def _resume_key(config: TrainConfig) -> str:
    """What must not change between a checkpoint and its resumption."""
    run = config.run
    fixed = {
        "run": [run.mode, run.seed, run.max_steps, run.max_seq_len, run.max_target_tokens],
        "rest": config.fingerprint("optim", "model", "hypernet", "profile", "oppu"),
        "tasks": list(config.data.tasks),
    }
    return json.dumps(fixed, sort_keys=True)


def derangement(users: list[str], rows: list[int], seed: int) -> list[int]:
    """``rows`` moved so that no position keeps a row of its own user (when there are two
    users or more): positions grouped by user (users in a seeded order), shifted by the
    largest group."""
    names = sorted(set(users))
    shuffled = np.random.default_rng([seed, 2]).permutation(len(names)).tolist()
    place = {names[n]: pos for pos, n in enumerate(shuffled)}
    order = sorted(range(len(users)), key=lambda i: (place[users[i]], i))
    shift = max(users.count(u) for u in names)
    out = [0] * len(users)
    for pos, i in enumerate(order):
        out[i] = rows[order[(pos + shift) % len(order)]]
    return out


class Trainer:
    """Trains ``config.run.mode``'s trainable on ``data`` through the frozen ``base``.

    ``init`` starts a plain LoRA (mt_lora / oppu) from an adapter; ``accelerator`` defaults to
    :func:`make_accelerator`. ``log`` receives one line of text per event (main process only).
    """

    def __init__(
        self,
        config: TrainConfig,
        data: TrainData,
        base: BaseModel,
        *,
        init: LoraAdapter | None = None,
        accelerator: Any = None,
        log: Any = None,
    ) -> None:
        self.config = config
        self.data = data
        self.base = base
        self.acc = accelerator if accelerator is not None else make_accelerator(config)
        self._log = log
        run = config.run
        if run.threads:
            torch.set_num_threads(run.threads)
        self.mode = run.mode
        self.out_dir = Path(run.out_dir)
        self.targets = targets_for(config, base)
        self.anchor_tasks = frozenset(config.optim.anchor_tasks)
        train = data.split("train")
        self.train_examples = [ex for ex in train if ex.task not in self.anchor_tasks]
        self.val_examples = data.split("val")
        # the anchor: training profiles of the tasks the run holds in place, not trains
        self.anchor_rows = sorted({
            r for ex in train if ex.task in self.anchor_tasks
            for r in (ex.emb_user, ex.emb_query) if r >= 0
        })
        if self.anchor_tasks and not self.anchor_rows:
            raise TrainingError(
                f"[optim] anchor_tasks {sorted(self.anchor_tasks)} have no training profiles "
                "in this data: list tasks that [data] tasks prepared"
            )
        self.ratings = RatingScale(base.tokenizer, sorted({ex.task for ex in data.examples}))
        self.sampler = TaskSampler(self.train_examples, seed=run.seed, mode=config.profile.mode)
        self._encoded: dict[tuple[str, int], Encoded] = {}

        trainable = build_trainable(
            config, self.targets, data.embedding_dim, init, base_model_id=base.model_id
        )
        if isinstance(trainable, HyperNetwork) and trainable.settings.whiten_input:
            if not run.init_from:  # a started network keeps its own whitening
                trainable.fit_whitening(torch.from_numpy(data.embeddings[self._train_rows()]))
        # the network as it started, which the anchor holds the anchor tasks' adapters to
        self.reference: nn.Module | None = None
        if self.anchor_rows:
            self.reference = copy.deepcopy(trainable).eval().requires_grad_(False)
        opt = config.optim
        optimizer = torch.optim.AdamW(
            trainable.parameters(),
            lr=opt.lr,
            betas=(opt.beta1, opt.beta2),
            eps=opt.eps,
            weight_decay=opt.weight_decay,
        )
        # the scheduler is stepped once per optimizer step by us, not by accelerate (which
        # would step it once per process)
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(
            optimizer, _Schedule(opt.warmup_steps, run.max_steps, opt.min_lr_ratio)
        )
        self.model, self.optimizer = self.acc.prepare(trainable, optimizer)
        device = self.acc.device
        base.model.to(device)
        base.model.requires_grad_(False)
        if run.grad_checkpointing:
            kwargs = {"use_reentrant": False}
            lm: Any = base.model
            if hasattr(lm, "activation_checkpointing_enable"):  # transformers >= 5
                lm.activation_checkpointing_enable(activation_checkpointing_kwargs=kwargs)
            else:
                lm.gradient_checkpointing_enable(gradient_checkpointing_kwargs=kwargs)
            base.model.train()  # transformers checkpoints only in training mode
        else:
            base.model.eval()
        if self.reference is not None:
            self.reference.to(device)
        self.injector = LoraInjector(base.model, self.targets)
        self.embeddings = torch.from_numpy(np.ascontiguousarray(data.embeddings)).to(device)
        self.is_main = self.acc.is_main_process
        self.rank, self.world = self.acc.process_index, self.acc.num_processes
        self.global_batch = run.batch_size * self.world * run.grad_accum
        self.replica_digests: list[str] = []

    def _train_rows(self) -> list[int]:
        """The embedding rows of the training examples' profiles (per user and per query)."""
        rows = {r for ex in self.train_examples for r in (ex.emb_user, ex.emb_query)}
        return sorted(r for r in rows if r >= 0)

    def close(self) -> None:
        """Take the LoRA hooks off the base model (it is the plain base model again)."""
        self.injector.remove()

    # --- helpers ---------------------------------------------------------------------------

    @property
    def trainable(self) -> nn.Module:
        return self.acc.unwrap_model(self.model)

    def say(self, text: str) -> None:
        if self.is_main and self._log is not None:
            self._log(text)

    def _encode(self, split: str, index: int, examples: list[Any]) -> Encoded:
        key = (split, index)
        hit = self._encoded.get(key)
        if hit is None:
            ex = examples[index]
            run = self.config.run
            hit = encode_example(
                self.base.tokenizer,
                ex.prompt,
                ex.target,
                max_seq_len=run.max_seq_len,
                max_target_tokens=run.max_target_tokens,
                system=self.config.data.system_prompt,
            )
            self._encoded[key] = hit
        return hit

    def _batch(self, draws: list[Draw], split: str = "train") -> Batch:
        examples = self.train_examples if split == "train" else self.val_examples
        encoded = [self._encode(split, d.index, examples) for d in draws]
        return collate(encoded, [d.emb_row for d in draws], self.base.pad_id).to(self.acc.device)

    def _forward(self, model: nn.Module, batch: Batch, label_smoothing: float,
                 emb_rows: list[int] | None = None,
                 row_grad: bool = False) -> tuple[LmLoss, Tensor]:
        """Generate the LoRAs, set them in the hooks and run the base model.

        The hooks keep the LoRAs until the caller clears them, after the backward pass
        (gradient checkpointing runs the hooks again during it).
        """
        rows = batch.emb_rows if emb_rows is None else emb_rows
        emb = self.embeddings[torch.as_tensor(rows, device=self.embeddings.device).clamp(min=0)]
        with self.acc.autocast():
            weights = model(emb)
            self.injector.set(weights)
            lm = lm_loss(self.base.model, batch, label_smoothing, row_grad)
            reg = weights.squared_mean()
        return lm, reg

    def _rating_rows(self, draws: list[Draw], split: str) -> RatedRows:
        """The batch rows of rating examples, per task: (positions, the ratings given)."""
        examples = self.train_examples if split == "train" else self.val_examples
        out: RatedRows = {}
        for pos, d in enumerate(draws):
            ex = examples[d.index]
            gold = self.ratings.gold(ex.task, ex.target)
            if gold is not None:
                rows, golds = out.setdefault(ex.task, ([], []))
                rows.append(pos)
                golds.append(gold)
        return out

    def _rating_terms(self, lm: LmLoss, draws: list[Draw]) -> Tensor:
        """The rating terms of the objective summed over the batch's rating examples:
        ``rating_ce_weight`` x CE over the scale + ``rating_risk_weight`` x :func:`rating_risk`
        (0 without rating examples)."""
        opt = self.config.optim
        total = lm.first_logits.new_zeros((), dtype=torch.float32)
        for task, (rows, golds) in self._rating_rows(draws, "train").items():
            probs, values = self.ratings.distribution(task, lm.first_logits[rows])
            gold = torch.tensor(golds, device=probs.device)
            if opt.rating_ce_weight:
                picked = probs[torch.arange(len(rows)), _index_of(values, gold)]
                total = total - opt.rating_ce_weight * picked.clamp_min(1e-12).log().sum()
            if opt.rating_risk_weight:
                total = total + opt.rating_risk_weight * rating_risk(probs, values, gold).sum()
        return total

    def _anchor_distances(self, model: nn.Module, rows: list[int]) -> Tensor:
        """Relative distance of ``model``'s adapter for each profile of ``rows`` from the
        starting network's [len(rows)] (:meth:`LoraWeights.relative_distance`). Both without
        dropout: the anchor holds the adapters users get, and dropout noise would swamp it."""
        assert self.reference is not None
        emb = self.embeddings[torch.as_tensor(rows, device=self.embeddings.device)]
        with torch.no_grad():
            start = self.reference(emb)
        was_training = model.training
        model.eval()
        try:
            with self.acc.autocast():
                return model(emb).relative_distance(start).float()
        finally:
            model.train(was_training)

    def _anchor_draw(self, step: int, salt: Sequence[int]) -> list[int]:
        """``batch_size`` anchor profiles for this step, seeded like the batches."""
        rng = np.random.default_rng([self.config.run.seed, step, 5, *salt])
        picks = rng.integers(len(self.anchor_rows), size=self.config.run.batch_size)
        return [self.anchor_rows[int(i)] for i in picks]

    # --- held-out loss -------------------------------------------------------------------

    def _val_draws(self) -> list[Draw]:
        """The held-out examples scored, with their profiles: seeded by the data's seed, not
        the run's, so runs that differ only in their seed are scored on the same examples."""
        n = len(self.val_examples)
        limit = self.config.data.max_val_examples
        if n == 0 or limit == 0:
            return []
        rng = np.random.default_rng([self.config.data.split_seed, 1])
        order = sorted(rng.permutation(n)[: min(n, limit)].tolist())
        coins = rng.random(len(order))
        return [
            Draw(i, self.sampler.embedding_row(self.val_examples[i], c))
            for i, c in zip(order, coins, strict=True)
        ]

    def _shuffled_rows(self, draws: list[Draw]) -> list[int]:
        """Each example gets the profile of another user of the same task.

        So the gap to the own-profile loss measures how much the user matters, not the task. A
        task with a single held-out user takes a profile from the other tasks instead.
        """
        seed = self.config.data.split_seed  # like _val_draws: the same donors in every run
        users = [self.val_examples[d.index].user_id for d in draws]
        rows = [d.emb_row for d in draws]
        out = derangement(users, rows, seed)
        by_task: dict[str, list[int]] = {}
        for pos, d in enumerate(draws):
            by_task.setdefault(self.val_examples[d.index].task, []).append(pos)
        for positions in by_task.values():
            if len({users[p] for p in positions}) < 2:
                continue
            mine = derangement([users[p] for p in positions], [rows[p] for p in positions], seed)
            for p, row in zip(positions, mine, strict=True):
                out[p] = row
        return out

    @torch.no_grad()
    def evaluate(self) -> dict[str, float]:
        """Plain CE per target token on the held-out examples (and with shuffled profiles),
        overall and per task (``val_ce/<task>``, ``val_ce_shuffled/<task>``,
        ``val_tokens/<task>``): the tasks' token counts differ by orders of magnitude (a rating
        is one token), so the overall figure is mostly the generation tasks. Rating tasks also
        get the greedy answer's absolute error (``val_mae/<task>``, ``val_mae_shuffled/<task>``:
        the most likely rating of the scale)."""
        draws = self._val_draws()
        if not draws:
            return {}
        shuffled = self._shuffled_rows(draws) if self.mode == "p2p" else None
        model = self.trainable
        was_training = model.training
        model.eval()
        tasks = sorted({self.val_examples[d.index].task for d in draws})
        task_of = [tasks.index(self.val_examples[d.index].task) for d in draws]
        bs = self.config.run.batch_size
        # per task: own-profile NLL, target tokens, shuffled-profile NLL
        sums = torch.zeros(len(tasks), 3, dtype=torch.float64, device=self.acc.device)
        # per task: own-profile absolute rating error, shuffled-profile one, rating examples
        errors = torch.zeros(len(tasks), 3, dtype=torch.float64, device=self.acc.device)
        mine = list(range(self.rank, len(draws), self.world))
        for start in range(0, len(mine), bs):
            idx = mine[start : start + bs]
            picked = [draws[i] for i in idx]
            batch = self._batch(picked, "val")
            rows_task = torch.as_tensor([task_of[i] for i in idx], device=sums.device)
            rated = self._rating_rows(picked, "val")
            try:
                lm, _ = self._forward(model, batch, 0.0)
                sums[:, 0].index_add_(0, rows_task, lm.nll_rows.double())
                sums[:, 1].index_add_(0, rows_task, lm.tokens_rows.double())
                self._add_errors(errors, tasks, rated, lm, 0)
                if shuffled is not None:
                    lm_s, _ = self._forward(model, batch, 0.0, [shuffled[i] for i in idx])
                    sums[:, 2].index_add_(0, rows_task, lm_s.nll_rows.double())
                    self._add_errors(errors, tasks, rated, lm_s, 1)
            finally:
                self.injector.clear()
        anchor = self._val_anchor(model, draws)
        model.train(was_training)
        sums = self.acc.reduce(sums, reduction="sum")
        errors = self.acc.reduce(errors, reduction="sum")
        total = sums.sum(dim=0)
        out = {"val_ce": float(total[0] / total[1]), "val_tokens": int(total[1])}
        if shuffled is not None:
            out["val_ce_shuffled"] = float(total[2] / total[1])
        if len(tasks) > 1:
            for t, task in enumerate(tasks):
                out[f"val_ce/{task}"] = float(sums[t, 0] / sums[t, 1])
                out[f"val_tokens/{task}"] = int(sums[t, 1])
                if shuffled is not None:
                    out[f"val_ce_shuffled/{task}"] = float(sums[t, 2] / sums[t, 1])
        if anchor is not None:
            out["val_anchor"] = anchor
        for t, task in enumerate(tasks):
            if errors[t, 2] > 0:
                out[f"val_mae/{task}"] = float(errors[t, 0] / errors[t, 2])
                if shuffled is not None:
                    out[f"val_mae_shuffled/{task}"] = float(errors[t, 1] / errors[t, 2])
        return out

    def _val_anchor(self, model: nn.Module, draws: list[Draw]) -> float | None:
        """The anchor's relative distance on the held-out anchor-task profiles (None when
        the run has no anchor); every process scores all of them."""
        rows = sorted({d.emb_row for d in draws
                       if self.val_examples[d.index].task in self.anchor_tasks})
        if self.reference is None or not rows:
            return None
        bs = self.config.run.batch_size
        pieces = [self._anchor_distances(model, rows[i : i + bs]) for i in range(0, len(rows), bs)]
        return float(torch.cat(pieces).mean())

    def _add_errors(self, errors: Tensor, tasks: list[str], rated: RatedRows, lm: LmLoss,
                    column: int) -> None:
        """Add the greedy rating's absolute errors per task to ``errors[:, column]`` (and the
        examples counted to ``errors[:, 2]`` with the own profile, ``column`` 0)."""
        for task, (rows, golds) in rated.items():
            probs, values = self.ratings.distribution(task, lm.first_logits[rows])
            answer = values[probs.argmax(dim=-1)]
            gold = torch.tensor(golds, device=answer.device)
            t = tasks.index(task)
            errors[t, column] += float((answer - gold).abs().sum())
            if column == 0:
                errors[t, 2] += len(rows)

    # --- checkpoints -------------------------------------------------------------------

    def _save(self, step: int, wall: float, window: Tensor | None = None) -> None:
        directory = step_dir(self.out_dir, step)
        state = SavedState(step, wall, self.global_batch, self.world, _resume_key(self.config))
        self.acc.wait_for_everyone()
        save_training_state(
            directory,
            trainable=self.trainable,
            optimizer=self.optimizer,
            scheduler=self.scheduler,
            state=state,
            rank=self.rank,
            is_main=self.is_main,
            process_state={"window": window.tolist() if window is not None else None},
        )
        self.acc.wait_for_everyone()
        if self.is_main:
            finish_checkpoint(directory, state, self.config.run.keep_checkpoints)
            plot_loss(LossLog(self.out_dir).rows(), self.out_dir / PLOT_FILE, self._title())
        self.acc.wait_for_everyone()

    def _restore(self, window: Tensor) -> tuple[int, float]:
        """Load the newest checkpoint (and the unlogged part of the loss window into
        ``window``); returns the step and the wall time so far."""
        ckpt = latest_checkpoint(self.out_dir)
        if ckpt is None:
            self.say(f"no checkpoint in {self.out_dir}: starting from step 0")
            return 0, 0.0
        state = read_state(ckpt)
        if state.fingerprint != _resume_key(self.config):
            raise TrainingError(
                f"checkpoint {ckpt} was made with other settings (mode, seed, steps, sequence "
                "lengths, [optim], [model], [hypernet], [profile] or tasks): resume with the "
                "same config, or train into a new --out folder"
            )
        if state.global_batch != self.global_batch:
            raise TrainingError(
                f"checkpoint {ckpt} used a global batch of {state.global_batch}, this run has "
                f"{self.global_batch} (batch_size x processes x grad_accum): match it to resume"
            )
        saved = load_training_state(
            ckpt,
            trainable=self.trainable,
            optimizer=self.optimizer,
            scheduler=self.scheduler,
            rank=self.rank,
        )
        if saved is None:
            self.say("this process has no saved random state: dropout restarts its stream")
        elif saved.get("window") is not None:
            window.copy_(torch.tensor(saved["window"], dtype=window.dtype))
        if self.is_main:
            LossLog(self.out_dir).truncate(state.step)
        self.say(f"resumed from {ckpt} at step {state.step}")
        return state.step, state.wall_seconds

    # --- the loop ------------------------------------------------------------------------

    def _seed_processes(self) -> None:
        seed = self.config.run.seed * 1000 + 17 * (self.rank + 1)
        random.seed(seed)
        np.random.seed(seed % (2**32))
        torch.manual_seed(seed)

    def fit(
        self,
        *,
        resume: bool = False,
        stop_after: int | None = None,
        time_limit_s: float | None = None,
    ) -> TrainResult:
        """Train until ``max_steps``, or ``stop_after`` steps of this call, or ``time_limit_s``.

        An early stop saves a checkpoint (continue with ``resume=True``) and still writes the
        current result, marked ``completed: false``.
        """
        run = self.config.run
        acc = self.acc
        self.out_dir.mkdir(parents=True, exist_ok=True)
        log = LossLog(self.out_dir)
        self._seed_processes()
        window = torch.zeros(5, dtype=torch.float64, device=acc.device)  # loss, ce*tok, reg, tok, n
        if resume:
            start, wall_before = self._restore(window)
        else:
            if latest_checkpoint(self.out_dir) is not None:
                raise TrainingError(
                    f"{self.out_dir} holds checkpoints of an earlier run: pass --resume to "
                    "continue it, or choose another --out folder"
                )
            start, wall_before = 0, 0.0
            if self.is_main:
                log.reset()
                (self.out_dir / "config.toml").write_text(self.config.to_toml())
        acc.wait_for_everyone()
        self.say(
            f"training {self.mode}: {len(self.train_examples)} examples, "
            f"{len(self.val_examples)} held out, global batch {self.global_batch} "
            f"({self.world} process{'es' if self.world > 1 else ''}), "
            f"steps {start}->{run.max_steps}"
        )
        t_start = time.perf_counter()  # wall time counts from here (the base load excluded)
        val: dict[str, float] = {}
        if start == 0 and run.eval_every and self.val_examples:
            val = self.evaluate()
            if self.is_main and val:
                log.append({"step": 0, **val})
                self.say(f"step 0 held-out CE {val['val_ce']:.4f}")

        self.model.train()
        last_row: dict[str, Any] = {}
        t_window = time.perf_counter()
        step = start
        steps_this_call = 0
        progress = self._progress(start)
        stop = _StopRequest.install() if self.world == 1 else None
        try:
            while step < run.max_steps:
                if stop_after is not None and steps_this_call >= stop_after:
                    break
                if time_limit_s is not None and self._out_of_time(t_start, time_limit_s):
                    break
                if stop is not None and stop.requested:
                    self.say(f"stopping at step {step} (signal): saving a checkpoint")
                    break
                grad_norm = self.train_step(step, window)
                step += 1
                steps_this_call += 1
                if step % run.log_every == 0 or step == run.max_steps:
                    last_row = self._log_window(step, window, grad_norm, t_window, log)
                    t_window = time.perf_counter()
                    window.zero_()
                if progress is not None:
                    progress.advance(last_row)
                if run.eval_every and step % run.eval_every == 0 and step < run.max_steps:
                    val = self._eval_and_log(step, log)
                if run.checkpoint_every and step % run.checkpoint_every == 0:
                    self._save(step, wall_before + time.perf_counter() - t_start, window)
        finally:
            if progress is not None:
                progress.close()
            if stop is not None:
                stop.uninstall()

        completed = step >= run.max_steps
        if completed and self.val_examples:
            val = self._eval_and_log(step, log)
        elapsed = time.perf_counter() - t_start
        wall = wall_before + elapsed
        latest = latest_checkpoint(self.out_dir)
        if latest is None or read_state(latest).step != step:
            self._save(step, wall, window)  # the final (or stopping) state is always resumable
        per_step = elapsed / steps_this_call if steps_this_call else None
        self.replica_digests = self._replica_digests()
        return self._finish(step, completed, wall, per_step, last_row, val)

    def _replica_digests(self) -> list[str]:
        """A sha256 prefix of the trainable's weights on every process (equal when in sync)."""
        import hashlib

        h = hashlib.sha256()
        for _name, value in sorted(self.trainable.state_dict().items()):
            h.update(value.detach().float().cpu().contiguous().numpy().tobytes())
        mine = torch.tensor([int(h.hexdigest()[:15], 16)], dtype=torch.int64,
                            device=self.acc.device)
        every = self.acc.gather(mine)
        return [f"{int(v):015x}" for v in every.tolist()]

    def _out_of_time(self, t_start: float, limit: float) -> bool:
        flag = torch.tensor(
            [1.0 if time.perf_counter() - t_start > limit else 0.0], device=self.acc.device
        )
        if self.world > 1:  # every process must stop at the same step
            flag = self.acc.reduce(flag, reduction="sum")
        return bool(flag.item() > 0)

    def compute_gradients(self, step: int, window: Tensor | None = None) -> float:
        """Forward and backward over step ``step``'s batch (all micro-batches of this
        process), leaving the gradients in place; returns the mean objective."""
        run, opt = self.config.run, self.config.optim
        acc = self.acc
        total = 0.0
        for micro in range(run.grad_accum):
            draws = self.sampler.micro_batch(
                step, batch_size=run.batch_size, rank=self.rank, world=self.world,
                micro=micro, accum=run.grad_accum,
            )
            encoded = [self._encode("train", d.index, self.train_examples) for d in draws]
            n_target = sum(e.n_target for e in encoded)
            chunks = self._chunks(draws, encoded)
            objective = ce_sum = reg_sum = 0.0
            for c, chunk in enumerate(chunks):
                last = micro == run.grad_accum - 1 and c == len(chunks) - 1
                batch = self._batch(chunk)
                with nullcontext() if last else acc.no_sync(self.model):
                    try:
                        lm, reg = self._forward(self.model, batch, opt.label_smoothing,
                                                row_grad=bool(opt.contrast_weight))
                        # the micro-batch's mean over target tokens / examples, by parts
                        share = len(chunk) / len(draws)
                        loss = lm.loss * (lm.n_tokens / n_target) + opt.reg_weight * reg * share
                        if opt.rating_ce_weight or opt.rating_risk_weight:
                            loss = loss + self._rating_terms(lm, chunk) / len(draws)
                        if opt.anchor_weight and c == 0:
                            rows = self._anchor_draw(step, (micro, self.rank))
                            loss = loss + opt.anchor_weight * self._anchor_distances(
                                self.model, rows).mean()
                        if opt.contrast_weight:
                            donors = self.sampler.donor_rows(step, chunk,
                                                             salt=(micro, c, self.rank))
                            other, _ = self._forward(self.model, batch, 0.0, donors,
                                                     row_grad=True)
                            hinge = contrast_hinge(lm, other, opt.contrast_margin)
                            loss = loss + opt.contrast_weight * hinge.sum() / len(draws)
                        acc.backward(loss / run.grad_accum)
                    finally:
                        self.injector.clear()
                objective += float(loss.detach())
                ce_sum += float(lm.nll_sum)
                reg_sum += float(reg.detach()) * share
            total += objective
            if window is not None:
                window += torch.tensor([objective, ce_sum, reg_sum, n_target, 1.0],
                                       dtype=window.dtype, device=window.device)
        return total / run.grad_accum

    def _chunks(self, draws: list[Draw], encoded: list[Encoded]) -> list[list[Draw]]:
        """The micro-batch in length-sorted pieces of at most ``max_batch_tokens`` padded
        tokens (one piece when 0): less padding, the same gradient."""
        budget = self.config.run.max_batch_tokens
        if not budget:
            return [draws]
        order = sorted(range(len(draws)), key=lambda i: (len(encoded[i].input_ids), i))
        chunks: list[list[Draw]] = []
        current: list[Draw] = []
        for i in order:
            width = len(encoded[i].input_ids)  # the longest so far: lengths ascend
            if current and (len(current) + 1) * width > budget:
                chunks.append(current)
                current = []
            current.append(draws[i])
        chunks.append(current)
        return chunks

    def train_step(self, step: int, window: Tensor | None = None) -> float:
        """One optimizer step on step ``step``'s batch; returns the gradient norm."""
        opt = self.config.optim
        acc = self.acc
        self.compute_gradients(step, window)
        params = [p for p in self.model.parameters() if p.requires_grad]
        if opt.grad_clip > 0:
            norm = acc.clip_grad_norm_(params, opt.grad_clip)
        else:
            grads = [p.grad.detach().norm() for p in params if p.grad is not None]
            norm = torch.norm(torch.stack(grads))
        self.optimizer.step()
        self.scheduler.step()
        self.optimizer.zero_grad(set_to_none=True)
        value = float(norm)
        if not math.isfinite(value):
            raise TrainingError(
                f"the gradient norm became {value} at step {step + 1}: lower [optim] lr, or "
                "use mixed_precision = \"no\""
            )
        return value

    def _log_window(self, step: int, window: Tensor, grad_norm: float, t0: float,
                    log: LossLog) -> dict[str, Any]:
        totals = self.acc.reduce(window.clone(), reduction="sum")
        n = max(1.0, float(totals[4]))
        row = {
            "step": step,
            "loss": float(totals[0]) / n,
            "ce": float(totals[1]) / max(1.0, float(totals[3])),
            "reg": float(totals[2]) / n,
            "lr": float(self.scheduler.get_last_lr()[0]),
            "grad_norm": grad_norm,
            "tokens": int(totals[3]),
            "seconds": round(time.perf_counter() - t0, 3),
        }
        if self.is_main:
            log.append(row)
        return row

    def _eval_and_log(self, step: int, log: LossLog) -> dict[str, float]:
        val = self.evaluate()
        if val and self.is_main:
            log.append({"step": step, **val})
            shuf = val.get("val_ce_shuffled")
            extra = f", shuffled profiles {shuf:.4f}" if shuf is not None else ""
            self.say(f"step {step} held-out CE {val['val_ce']:.4f}{extra}")
            for metric, title in (("val_ce", "by task"), ("val_mae", "greedy rating MAE")):
                parts = _own_and_shuffled(val, metric)
                if parts:
                    self.say(f"  {title} (own / shuffled): " + ", ".join(parts))
        return val

    def _progress(self, start: int) -> _Progress | None:
        if not (self.is_main and self.config.run.progress):
            return None
        return _Progress(start, self.config.run.max_steps, self._log)

    def _title(self) -> str:
        return f"{self.mode} on {self.base.model_id} (global batch {self.global_batch})"

    # --- the result ------------------------------------------------------------------------

    def _finish(self, step: int, completed: bool, wall: float, per_step: float | None,
                last_row: dict[str, Any], val: dict[str, float]) -> TrainResult:
        rows = LossLog(self.out_dir).rows() if self.is_main else []
        train_rows = [r for r in rows if "loss" in r]
        val_rows = [r for r in rows if "val_ce" in r]
        tail = [r for r in train_rows if r["step"] > 0.9 * step] or train_rows[-1:]
        final_loss = float(np.mean([r["loss"] for r in tail])) if tail else None
        final_ce = float(np.mean([r["ce"] for r in tail])) if tail else None
        last_val = val_rows[-1] if val_rows else {}
        result_path: Path | None = None
        meta_path: Path | None = None
        if self.is_main:
            meta = self._metadata(step, completed, wall, per_step, final_loss, final_ce,
                                  val_rows)
            result_path = self._write_result(meta)
            meta_path = self.out_dir / METADATA_FILE
            tmp = meta_path.with_suffix(".json.tmp")
            tmp.write_text(json.dumps(meta, indent=2) + "\n")
            os.replace(tmp, meta_path)
            plot_loss(rows, self.out_dir / PLOT_FILE, self._title())
            state = "finished" if completed else "stopped (resume with --resume)"
            self.say(f"{state} at step {step}; result in {result_path}")
        self.acc.wait_for_everyone()
        return TrainResult(
            out_dir=self.out_dir,
            steps=step,
            completed=completed,
            final_train_loss=final_loss,
            final_train_ce=final_ce,
            final_val_ce=last_val.get("val_ce"),
            final_val_ce_shuffled=last_val.get("val_ce_shuffled"),
            wall_seconds=wall,
            seconds_per_step=per_step,
            result_path=self.out_dir / RESULT_DIRS[self.mode],
            metadata_path=meta_path,
        )

    def _write_result(self, meta: dict[str, Any]) -> Path:
        target = self.out_dir / RESULT_DIRS[self.mode]
        trainable = self.trainable
        if isinstance(trainable, PlainLora):
            from p2p_local.export.peft import save_peft

            adapter = trainable.to_adapter(self.base.model_id)
            save_peft(adapter, target, base_model_name_or_path=self.base.model_id)
            return target
        from p2p_local.hypernet.checkpoint import save_checkpoint
        from p2p_local.profile.builder import ProfileSettings

        recorded = self.data.meta.get("profile_settings")  # absent: data prepared before
        summary = {k: meta[k] for k in ("mode", "steps", "completed", "global_batch",
                                        "final_train_loss", "final_val_ce", "wall_seconds")}
        save_checkpoint(
            trainable,  # type: ignore[arg-type]
            target,
            base_model=self.base.model_id,
            embedding_model=str(self.data.meta.get("embedding_model", "")) or "unknown",
            profile=ProfileSettings.from_dict(recorded) if isinstance(recorded, dict) else None,
            extra={"training": summary},
        )
        return target

    def _metadata(self, step: int, completed: bool, wall: float, per_step: float | None,
                  final_loss: float | None, final_ce: float | None,
                  val_rows: list[dict[str, Any]]) -> dict[str, Any]:
        import accelerate
        import transformers

        import p2p_local

        run = self.config.run
        device = self.acc.device
        if device.type == "cuda":
            hardware = torch.cuda.get_device_name(device)
        else:
            hardware = f"{platform.processor() or platform.machine()} CPU, {os.cpu_count()} cores"
        first_val = val_rows[0] if val_rows else {}
        last_val = val_rows[-1] if val_rows else {}
        return {
            "format": METADATA_FORMAT,
            "mode": self.mode,
            "completed": completed,
            "steps": step,
            "max_steps": run.max_steps,
            "global_batch": self.global_batch,
            "batch_size_per_process": run.batch_size,
            "grad_accum": run.grad_accum,
            "processes": self.world,
            "examples_seen": step * self.global_batch,
            "replica_weight_digests": self.replica_digests,
            "replicas_in_sync": len(set(self.replica_digests)) == 1,
            "wall_seconds": round(wall, 1),
            "seconds_per_step_last_call": round(per_step, 3) if per_step else None,
            "final_train_loss": final_loss,
            "final_train_ce": final_ce,
            "initial_val_ce": first_val.get("val_ce"),
            "final_val_ce": last_val.get("val_ce"),
            "final_val_ce_shuffled": last_val.get("val_ce_shuffled"),
            "final_val_by_task": {k: v for k, v in last_val.items() if "/" in k},
            "val_examples_scored": len(self._val_draws()),
            "base_model": self.base.model_id,
            "embedding_model": self.data.meta.get("embedding_model"),
            "targets": self.targets.to_dict(),
            "task_probabilities": self.sampler.task_probabilities(),
            "train_examples": len(self.train_examples),
            "data": self.data.meta,
            "hardware": {
                "device": hardware,
                "device_type": device.type,
                "mixed_precision": str(self.acc.mixed_precision),
                "torch_threads": torch.get_num_threads(),
            },
            "versions": {
                "p2p_local": p2p_local.__version__,
                "torch": torch.__version__,
                "transformers": transformers.__version__,
                "accelerate": accelerate.__version__,
                "python": platform.python_version(),
            },
            "config": self.config.to_dict(),
            "written_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        }


def _own_and_shuffled(val: dict[str, float], metric: str) -> list[str]:
    """``"task own / shuffled"`` for each task that has ``metric`` in ``val``."""
    parts = []
    for key, own in val.items():
        if key.startswith(f"{metric}/"):
            task = key.partition("/")[2]
            other = val.get(f"{metric}_shuffled/{task}")
            parts.append(f"{task} {own:.3f}" + (f" / {other:.3f}" if other is not None else ""))
    return parts


class _StopRequest:
    """SIGTERM (``kill``) or a first Ctrl-C asks a one-process run to stop at the next step
    boundary, with a checkpoint and the current result; a second Ctrl-C interrupts at once."""

    def __init__(self) -> None:
        self.requested = False
        self._previous: dict[int, Any] = {}

    @classmethod
    def install(cls) -> _StopRequest | None:
        import signal
        import threading

        if threading.current_thread() is not threading.main_thread():
            return None
        stop = cls()
        for sig in (signal.SIGTERM, signal.SIGINT):
            stop._previous[sig] = signal.signal(sig, stop._handle)
        return stop

    def _handle(self, signum: int, frame: Any) -> None:
        import signal

        if self.requested and signum == signal.SIGINT:
            raise KeyboardInterrupt
        self.requested = True

    def uninstall(self) -> None:
        import signal

        for sig, handler in self._previous.items():
            signal.signal(sig, handler)


class _Progress:
    """A rich progress bar on a terminal; a plain line per log window elsewhere."""

    def __init__(self, start: int, total: int, log: Any) -> None:
        from rich.console import Console

        from p2p_local.progress import step_bar

        self.console = Console(stderr=True)
        self.log = log
        self.last_step: int | None = None
        self.bar = step_bar("[bold]train", fields=("{task.fields[loss]}",))
        if self.bar is not None:
            self.task = self.bar.add_task("train", total=total, completed=start, loss="")
            self.bar.start()

    def advance(self, row: dict[str, Any]) -> None:
        if self.bar is not None:
            text = f"loss {row['loss']:.4f}" if row else ""
            self.bar.update(self.task, advance=1, loss=text)
        elif row and row["step"] != self.last_step:
            self.last_step = row["step"]
            line = (f"step {row['step']} loss {row['loss']:.4f} ce {row['ce']:.4f} "
                    f"lr {row['lr']:.2e} |g| {row['grad_norm']:.3f} {row['seconds']:.1f}s")
            if self.log is not None:
                self.log(line)
            else:
                self.console.print(line, highlight=False)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.stop()
