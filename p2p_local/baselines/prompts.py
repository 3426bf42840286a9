"""The one prompt every method sends: optional user context, then the task query.

Owns :class:`Context` (what a prompt-based method knows about the user: fixed sections such as
the summary and statistics, plus history lines in priority order) and :func:`build_messages`,
which fits context and query into the model's window. Every method goes through it, so the
methods differ only in the context (and the adapter), never in the wording.

The user message is::

    {context: the profile sections, e.g. "## User Profile: ..." / "## User History:\\n- ..."}

    {the query: the task's full prompt, instruction included (LaMP convention)}

With no context it is the query alone, exactly what the hypernetwork and the LoRA baselines
were trained on (no system message unless one is given). Fitting: the budget is the context
window minus the answer's ``max_tokens`` and a small margin; history lines are dropped from the
end of the priority order (least relevant or oldest first) until the prompt fits, then the
fixed sections are cut, and a query that alone is too long is cut in the middle.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from p2p_local.errors import ConfigError
from p2p_local.runtime.base import Message

MARGIN_TOKENS = 8
HISTORY_TITLE = "## User History:"


@dataclass(frozen=True)
class Context:
    """What a prompt tells the model about the user.

    fixed:    sections always shown first (summary, statistics), already rendered.
    items:    history lines, most important first; the prompt keeps a prefix of them.
    show:     "priority" shows the kept lines in priority order; "reversed" shows them in
              reverse (e.g. most recent first in priority, shown oldest first).
    """

    fixed: tuple[str, ...] = ()
    items: tuple[str, ...] = ()
    show: str = "priority"

    def __post_init__(self) -> None:
        if self.show not in ("priority", "reversed"):
            raise ConfigError(f"Context.show must be 'priority' or 'reversed', got {self.show!r}")

    def render(self, n_items: int | None = None) -> str:
        """The context text with the first ``n_items`` history lines (all when None)."""
        kept = list(self.items if n_items is None else self.items[:n_items])
        if self.show == "reversed":
            kept.reverse()
        sections = [s for s in self.fixed if s.strip()]
        if kept:
            sections.append(HISTORY_TITLE + "\n" + "\n".join(f"- {line}" for line in kept))
        return "\n\n".join(sections)


@dataclass(frozen=True)
class Prompt:
    """The messages to send and how much context made it in."""

    messages: list[Message]
    tokens: int
    items_used: int
    items_total: int
    truncated: bool = False
    notes: list[str] = field(default_factory=list)


def cut_text(text: str, chars: int) -> str:
    """``text`` on one line, cut at a word boundary to at most ``chars`` characters."""
    text = " ".join(text.split())
    if len(text) <= chars:
        return text
    head = text[: max(1, chars - 4)].rsplit(" ", 1)[0] or text[: max(1, chars - 4)]
    return head + " ..."


def _messages(user: str, system: str) -> list[Message]:
    msgs: list[Message] = [{"role": "system", "content": system}] if system else []
    return [*msgs, {"role": "user", "content": user}]


def _join(context: str, query: str) -> str:
    return f"{context}\n\n{query}" if context.strip() else query


def build_messages(
    query: str,
    context: Context | None,
    *,
    count_prompt: Callable[[list[Message]], int],
    budget: int,
    system: str = "",
) -> Prompt:
    """The chat messages for ``query`` with as much of ``context`` as fits ``budget`` tokens.

    ``count_prompt`` counts the tokens of a message list as the model will see it (chat
    template included); ``budget`` is what the prompt may use (window - answer - margin).
    """
    if budget < 16:
        raise ConfigError(f"prompt budget must be at least 16 tokens, got {budget}")
    ctx = context or Context()
    total = len(ctx.items)

    def size(n: int | None, fixed: Sequence[str] | None = None, q: str = query) -> int:
        c = ctx if fixed is None else Context(tuple(fixed), ctx.items, ctx.show)
        return count_prompt(_messages(_join(c.render(n), q), system))

    notes: list[str] = []
    q = query
    bare = count_prompt(_messages(q, system))
    if bare > budget:  # the query alone does not fit: cut its middle
        q = _cut_middle(q, bare, budget, lambda t: count_prompt(_messages(t, system)))
        notes.append("query shortened")
        msgs = _messages(q, system)
        return Prompt(msgs, count_prompt(msgs), 0, total, True, notes)

    fixed = list(ctx.fixed)
    if size(0, fixed, q) > budget:  # even the fixed sections are too long: shorten them
        room_chars = max(0, sum(len(s) for s in fixed))
        while fixed and size(0, fixed, q) > budget and room_chars > 0:
            room_chars = int(room_chars * 0.8)
            fixed = _shrink(ctx.fixed, room_chars)
        notes.append("profile sections shortened")
    low, high = 0, total
    if size(high, fixed, q) > budget:  # binary search for the longest prefix that fits
        while low < high:
            mid = (low + high + 1) // 2
            if size(mid, fixed, q) <= budget:
                low = mid
            else:
                high = mid - 1
        n = low
    else:
        n = total
    user_text = _join(Context(tuple(fixed), ctx.items, ctx.show).render(n), q)
    msgs = _messages(user_text, system)
    truncated = n < total or bool(notes)
    return Prompt(msgs, count_prompt(msgs), n, total, truncated, notes)


def _shrink(sections: Sequence[str], chars: int) -> list[str]:
    """The sections cut to ``chars`` characters in total (later sections lose first)."""
    out: list[str] = []
    left = chars
    for s in sections:
        if left <= 0:
            break
        out.append(s if len(s) <= left else cut_text(s, max(8, left)))
        left -= len(out[-1])
    return out


def _cut_middle(text: str, tokens: int, budget: int, count: Callable[[str], int]) -> str:
    """``text`` with its middle replaced by `` ... `` until ``count`` fits ``budget``."""
    for _ in range(8):
        if tokens <= budget:
            break
        excess = tokens - budget + 4
        keep = max(1, int((len(text) * (1 - excess / max(tokens, 1)) - 5) / 2))
        text = text[:keep] + " ... " + text[len(text) - keep :]
        tokens = count(text)
    return text


def prompt_budget(n_ctx: int, max_tokens: int) -> int:
    """Tokens a prompt may use in a window of ``n_ctx`` when the answer gets ``max_tokens``."""
    return n_ctx - max_tokens - MARGIN_TOKENS
