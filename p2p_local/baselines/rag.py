"""RAG: the k history items BM25 retrieves for the query, in the prompt.

Owns :class:`RAG`. Retrieval is the profile stage's (``profile.retrieval``: the same tokenizer
and ranking the per-query profiles use); each item is rendered with its rating or label and cut
to ``MethodSettings.item_chars``.
"""

from __future__ import annotations

from p2p_local.baselines.common import Method, MethodSpec, Plan
from p2p_local.baselines.prompts import Context
from p2p_local.datasets.base import Query, UserRecord


class RAG(Method):
    spec = MethodSpec("rag", "BM25 top-k history items in the prompt",
                      frozenset({"profile"}), uses=("k", "item_chars"))

    def plan(self, user: UserRecord, query: Query) -> Plan:
        lines = self.env.retrieved_lines(user, query.input)
        prompt = self.env.prompt(query, Context(items=tuple(lines)))
        return Plan(prompt.messages, None, prompt.tokens, prompt.notes)
