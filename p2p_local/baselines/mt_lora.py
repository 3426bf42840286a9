"""MT-LoRA: one LoRA trained on every training user's input/output pairs, no profile.

Owns :class:`MTLoRA`. The adapter comes from ``MethodSettings.mt_lora`` (a PEFT folder, or the
run folder of ``p2p-local train`` with ``run.mode = "mt_lora"``), trained by this project's
trainer on the same training users as the hypernetwork. The prompt is the query alone, as in
training; the same adapter answers for every user.
"""

from __future__ import annotations

from typing import Any

from p2p_local.baselines.common import Method, MethodSpec, Plan, adapter_digest
from p2p_local.datasets.base import Query, UserRecord


class MTLoRA(Method):
    spec = MethodSpec("mt-lora", "one LoRA trained on all training users (no profile)",
                      frozenset({"mt_lora"}), adapter="shared")

    def __init__(self, env: Any) -> None:
        super().__init__(env)
        self._payload: Any = None

    def setup(self) -> None:
        adapter = self.env.mt_lora(required=True)
        self._payload = self.env.payload(adapter, "mt-lora")

    def fingerprint(self) -> dict[str, Any]:
        adapter = self.env.mt_lora(required=True)
        return {**super().fingerprint(), "mt_lora": adapter_digest(adapter)}

    def plan(self, user: UserRecord, query: Query) -> Plan:
        if self._payload is None:
            self.setup()
        prompt = self.env.prompt(query)
        return Plan(prompt.messages, self._payload, prompt.tokens, prompt.notes)

