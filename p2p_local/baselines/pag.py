"""PAG (profile-augmented generation): the user's summary, history statistics and the k
retrieved items in the prompt.

Owns :class:`PAG`. The text is the per-query profile P2P embeds (``## User Profile`` summary,
``## User History Statistics`` when the history has ratings or labels, ``## User History`` with
the retrieved items), so PAG and P2P per-query get the same information: once as prompt text,
once through the generated adapter.
"""

from __future__ import annotations

from p2p_local.baselines.common import Method, MethodSpec, Plan
from p2p_local.baselines.prompts import Context
from p2p_local.datasets.base import Query, UserRecord


class PAG(Method):
    spec = MethodSpec("pag", "LLM summary + statistics + BM25 top-k items in the prompt",
                      frozenset({"summary", "profile"}), uses=("k", "item_chars", "summaries"))

    def plan(self, user: UserRecord, query: Query) -> Plan:
        fixed = []
        summary = self.env.summary(user)
        if summary:
            fixed.append(f"## User Profile: {' '.join(summary.split())}")
        stats = self.env.statistics(user)
        if stats is not None:
            fixed.append(f"## User History Statistics: {stats.render()}")
        lines = self.env.retrieved_lines(user, query.input)
        prompt = self.env.prompt(query, Context(fixed=tuple(fixed), items=tuple(lines)))
        return Plan(prompt.messages, None, prompt.tokens, prompt.notes)
