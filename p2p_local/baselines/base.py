"""The Base method: the base model answers the query alone, with no personalization.

Owns :class:`Base`. The prompt is exactly the one the LoRA methods see (the query, no context),
so Base vs MT-LoRA / P2P isolates what the adapter adds.
"""

from __future__ import annotations

from p2p_local.baselines.common import Method, MethodSpec, Plan
from p2p_local.datasets.base import Query, UserRecord


class Base(Method):
    spec = MethodSpec("base", "the base model alone: no profile, no adapter")

    def plan(self, user: UserRecord, query: Query) -> Plan:
        prompt = self.env.prompt(query)
        return Plan(prompt.messages, None, prompt.tokens, prompt.notes)
