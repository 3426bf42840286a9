"""Full History: as many of the user's most recent history items as the context window holds.

Owns :class:`FullHistory`. Items are taken newest first (by their times when every item has
one, else their order) until the prompt is full, and shown oldest first; each is cut to
``MethodSettings.history_chars``. Its cost grows with the window: this is the baseline whose
per-query time the table shows to be largest.
"""

from __future__ import annotations

from p2p_local.baselines.common import EvalEnv, Method, MethodSpec, Plan
from p2p_local.baselines.prompts import Context, cut_text
from p2p_local.datasets.base import Query, UserRecord


class FullHistory(Method):
    spec = MethodSpec("full-history", "the most recent history items that fit the window",
                      frozenset({"profile"}), uses=("history_chars",))

    def __init__(self, env: EvalEnv) -> None:
        super().__init__(env)
        self._lines: dict[str, tuple[str, ...]] = {}

    def setup_user(self, user: UserRecord) -> float | None:
        from p2p_local.profile.summarize import recency_order, render_item

        newest_first = recency_order(user.history)[::-1]
        chars = self.env.settings.history_chars
        self._lines[user.user_id] = tuple(
            cut_text(render_item(user.history[i]), chars) for i in newest_first
        )
        return None

    def plan(self, user: UserRecord, query: Query) -> Plan:
        if user.user_id not in self._lines:
            self.setup_user(user)
        context = Context(items=self._lines[user.user_id], show="reversed")
        prompt = self.env.prompt(query, context)
        notes = [*prompt.notes, f"{prompt.items_used}/{prompt.items_total} items"]
        return Plan(prompt.messages, None, prompt.tokens, notes)
