"""OPPU (one PEFT per user): a LoRA trained on the target user's own history.

Owns :class:`OPPU` and :func:`user_examples`. For every evaluated user a plain LoRA (the
trainer's LoRA mode, :func:`p2p_local.train.run.train_user_lora`) is trained on that user's
history items turned into the task's (prompt, answer) form, starting from the MT-LoRA adapter
when one is given (as in the OPPU paper), else from a fresh PEFT-style LoRA; the targets (modules,
rank, alpha) are the MT-LoRA's, else q_proj / v_proj, r = 8, alpha = 16 with rsLoRA. Training
runs ``oppu_epochs`` passes over the examples (in steps of ``oppu_batch_size`` examples, capped at
``oppu_max_steps``); its wall time is the method's per-user cost, the number the deployment-cost
benchmark compares with P2P. Trained adapters are cached in ``<out>/oppu/`` so a resumed
evaluation does not train again.

History items become examples through the trainer's ``history_examples`` for the built-in tasks;
for other tasks (LaMP files): a rated item asks for its rating, a labelled item for its label,
an item with a title and a body asks for the title, and any other item is a sample of the user's
writing (``"Write something in your own words."`` -> the item).
"""

from __future__ import annotations

import hashlib
import json
import math
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from p2p_local.baselines.common import EvalEnv, Method, MethodSpec, Plan, adapter_digest
from p2p_local.baselines.prompts import cut_text
from p2p_local.datasets.base import Query, TaskSpec, UserRecord
from p2p_local.errors import EvaluationError

if TYPE_CHECKING:
    from p2p_local.adapter import LoraAdapter
    from p2p_local.train.config import TrainConfig
    from p2p_local.train.data import Example

RATING_PROMPT = (
    "How would you rate the following on a scale of {low} to {high}? "
    "Answer with a single number.\n\n{text}"
)
LABEL_PROMPT = "Which of these labels fits the following best: {labels}? Answer with the label " \
    "only.\n\n{text}"
TITLE_PROMPT = "Write a title for the following text.\n\n{text}"
STYLE_PROMPT = "Write something in your own words."
_TEXT_CHARS = 1200


def _generic_example(spec: TaskSpec, user: UserRecord, item: Any) -> tuple[str, str] | None:
    lamp = item.meta.get("lamp") if isinstance(item.meta, dict) else None
    if item.score is not None and spec.kind == "rating":
        labels = spec.labels or ("1", "2", "3", "4", "5")
        values = {float(v): v for v in labels}
        answer = values.get(float(item.score))
        if answer is None:
            return None
        return RATING_PROMPT.format(low=labels[0], high=labels[-1],
                                    text=cut_text(item.text, _TEXT_CHARS)), answer
    if item.label and spec.kind == "classification":
        label_list = ", ".join(spec.labels) if spec.labels else item.label
        prompt = LABEL_PROMPT.format(labels=label_list, text=cut_text(item.text, _TEXT_CHARS))
        return prompt, item.label
    if isinstance(lamp, dict) and lamp.get("title"):
        body = lamp.get("abstract") or lamp.get("text") or lamp.get("description")
        if isinstance(body, str) and body.strip():
            return TITLE_PROMPT.format(text=cut_text(body, _TEXT_CHARS)), str(lamp["title"])
    if item.text.strip():
        return STYLE_PROMPT, cut_text(item.text, _TEXT_CHARS)
    return None


def user_examples(spec: TaskSpec, user: UserRecord) -> list[Example]:
    """The user's history as training examples in the task's form (see the module docstring)."""
    from p2p_local.train.data import Example
    from p2p_local.train.profiles_cache import history_examples

    examples = history_examples(spec.name, user)
    if examples:
        return examples
    out = []
    for item in user.history:
        pair = _generic_example(spec, user, item)
        if pair is not None and pair[1].strip():
            out.append(Example(task=spec.name, user_id=user.user_id, prompt=pair[0],
                               target=pair[1]))
    return out


def oppu_config(env: EvalEnv, n_examples: int, init: LoraAdapter | None) -> TrainConfig:
    """The trainer configuration of one user's OPPU LoRA."""
    from p2p_local.train.config import TrainConfig

    s = env.settings
    steps = min(s.oppu_max_steps, max(1, math.ceil(n_examples * s.oppu_epochs / s.oppu_batch_size)))
    model: dict[str, Any] = {"modules": ["q_proj", "v_proj"], "rank": 8, "alpha": 16.0,
                             "rslora": True}
    if init is not None:
        t = init.targets
        model = {"modules": list(t.module_names), "rank": t.rank, "alpha": float(t.alpha),
                 "rslora": t.rslora}
    return TrainConfig.from_dict({
        "run": {"mode": "mt_lora", "out_dir": "oppu", "seed": s.seed, "max_steps": steps,
                "batch_size": s.oppu_batch_size, "max_seq_len": s.oppu_seq_len,
                "max_target_tokens": min(64, s.oppu_seq_len - 8), "log_every": steps,
                "eval_every": 0, "checkpoint_every": 0, "progress": False},
        "optim": {"lr": s.oppu_lr, "warmup_steps": 0},
        "model": model,
        "data": {"tasks": [env.spec.name]},
    })


class OPPU(Method):
    spec = MethodSpec("oppu", "a LoRA trained on the user's own history (from MT-LoRA)",
                      frozenset({"train"}), adapter="user")

    def __init__(self, env: EvalEnv) -> None:
        super().__init__(env)
        self._payloads: dict[str, Any] = {}
        self.steps: dict[str, int] = {}

    def _init(self) -> LoraAdapter | None:
        return self.env.mt_lora(required=False)

    def fingerprint(self) -> dict[str, Any]:
        s = self.env.settings
        init = self._init()
        return {
            **super().fingerprint(),
            "model": self.env.base_model_id(),
            "task": self.env.spec.name,
            "init": adapter_digest(init) if init is not None else "fresh",
            "oppu": [s.oppu_epochs, s.oppu_max_steps, s.oppu_batch_size, s.oppu_lr,
                     s.oppu_seq_len, s.seed],
        }

    def _cache_dir(self) -> Path | None:
        if self.env.out_dir is None:
            return None
        key = hashlib.sha256(json.dumps(self.fingerprint(), sort_keys=True).encode())
        return self.env.out_dir / "oppu" / key.hexdigest()[:12]

    def train(self, user: UserRecord) -> tuple[LoraAdapter, float, int]:
        """Train the user's LoRA now: (adapter, seconds, steps)."""
        from p2p_local.train.run import train_user_lora

        examples = user_examples(self.env.spec, user)
        if not examples:
            raise EvaluationError(
                f"user {user.user_id!r} has no history items OPPU can train on"
            )
        init = self._init()
        config = oppu_config(self.env, len(examples), init)
        base = self.env.train_base()
        start = time.perf_counter()
        adapter = train_user_lora(config, examples, base, init=init)
        return adapter, time.perf_counter() - start, config.run.max_steps

    def setup_user(self, user: UserRecord) -> float | None:
        from p2p_local.adapter import LoraAdapter
        from p2p_local.datasets.base import safe_id

        folder = self._cache_dir()
        h = hashlib.sha256(user.user_id.encode())
        for item in user.history:  # a changed history trains a new LoRA
            h.update(item.content_hash().encode())
        name = f"{safe_id(user.user_id)}-{h.hexdigest()[:8]}"
        weights = folder / f"{name}.adapter" if folder else None
        info = folder / f"{name}.json" if folder else None
        if weights is not None and info is not None and weights.is_file() and info.is_file():
            adapter = LoraAdapter.from_bytes(weights.read_bytes())
            meta = json.loads(info.read_text())
            seconds, steps = float(meta["seconds"]), int(meta["steps"])
        else:
            adapter, seconds, steps = self.train(user)
            if weights is not None and info is not None:
                weights.parent.mkdir(parents=True, exist_ok=True)
                weights.write_bytes(adapter.to_bytes())
                info.write_text(json.dumps({"user": user.user_id, "seconds": seconds,
                                            "steps": steps}))
        self.steps[user.user_id] = steps
        self._payloads[user.user_id] = self.env.payload(adapter, f"oppu:{user.user_id}")
        return seconds

    def finish_user(self, user: UserRecord) -> None:
        self._payloads.pop(user.user_id, None)

    def plan(self, user: UserRecord, query: Query) -> Plan:
        if user.user_id not in self._payloads:
            self.setup_user(user)
        prompt = self.env.prompt(query)
        return Plan(prompt.messages, self._payloads[user.user_id], prompt.tokens, prompt.notes)
