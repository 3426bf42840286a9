"""P2P: the hypernetwork's LoRA from the user's profile, and its ablations.

Owns :class:`P2P` and its variants. Every variant embeds a profile text (the training format,
``profile.builder.build_profile`` with the task's description), runs the hypernetwork once and
applies the resulting LoRA (its update times ``MethodSettings.adapter_scale``) to the base
model (on llama.cpp as an in-memory GGUF adapter, hot-swapped); the prompt is the query alone,
as in training. The variants differ only in the profile:

- ``p2p``:                per-user profile (summary + statistics, and the most recent items
                          when the checkpoint was trained with them), one adapter per user;
- ``p2p-per-query``:      per-query profile (+ the k items BM25 retrieves for the query);
- ``p2p-shuffled``:       another evaluated user's per-user profile (a fixed derangement);
- ``p2p-per-query-shuffled``: that same other user's per-query profile (their summary,
                          statistics and the items BM25 retrieves from *their* history for this
                          query): tells whether ``p2p-per-query`` gains from the user's own items
                          or from any items about the query;
- ``p2p-random``:         a random unit vector instead of a profile embedding (seeded per user);
- ``p2p-summary-only``:   the summary alone (no statistics, no items);
- ``p2p-retrieval-only``: the retrieved items alone (per query; no summary, no statistics).

If the true profile does not beat the shuffled and random ones, the hypernetwork ignores the
user. Does not own the hypernetwork (``hypernet/``) or the GGUF export (``export/``).
"""

from __future__ import annotations

import hashlib
from typing import Any

import numpy as np

from p2p_local.baselines.common import EvalEnv, Method, MethodSpec, Plan
from p2p_local.datasets.base import Query, UserRecord
from p2p_local.errors import EvaluationError

_NEEDS = frozenset({"checkpoint", "profile"})
_USES = ("k", "item_chars", "summaries", "seed", "adapter_scale")


class P2P(Method):
    spec = MethodSpec("p2p", "hypernetwork LoRA from the per-user profile (summary + statistics)",
                      _NEEDS | {"summary"}, adapter="user", uses=_USES)
    per_query = False

    def __init__(self, env: EvalEnv) -> None:
        super().__init__(env)
        self._payloads: dict[str, Any] = {}

    def setup(self) -> None:
        self.env.checkpoint()  # load and check it before the first user

    def fingerprint(self) -> dict[str, Any]:
        ckpt = self.env.checkpoint()
        return {**super().fingerprint(), "checkpoint": ckpt.info.checkpoint_id,
                "embedding": self.env.embedder().model_id}

    # the profile text each variant embeds (None: no text, see :meth:`embedding`)
    def profile_text(self, user: UserRecord, query: Query | None) -> str | None:
        return self.user_profile(user)

    def user_profile(self, user: UserRecord) -> str:
        """``user``'s per-user profile, built with the checkpoint's recorded settings."""
        recent = self.env.checkpoint().info.profile().recent
        return self.env.profile(user, recent=recent).text

    def embedding(self, user: UserRecord, query: Query | None) -> np.ndarray:
        self.env.checkpoint()  # loads the embedder the checkpoint was trained with
        text = self.profile_text(user, query)
        if text is None:
            raise EvaluationError(f"{self.name} has no profile text for user {user.user_id!r}")
        return self.env.embedder().embed([text])[0]

    def _payload(self, user: UserRecord, query: Query | None) -> Any:
        adapter = self.env.adapter_for(self.embedding(user, query))
        adapter = adapter.scaled(self.env.settings.adapter_scale)
        key = f"{self.name}:{user.user_id}" + (f":{query.id}" if query is not None else "")
        return self.env.payload(adapter, key)

    def setup_user(self, user: UserRecord) -> float | None:
        if not self.per_query:
            self._payloads[user.user_id] = self._payload(user, None)
        return None

    def finish_user(self, user: UserRecord) -> None:
        self._payloads.pop(user.user_id, None)

    def plan(self, user: UserRecord, query: Query) -> Plan:
        if self.per_query:
            payload = self._payload(user, query)
        else:
            if user.user_id not in self._payloads:
                self.setup_user(user)
            payload = self._payloads[user.user_id]
        prompt = self.env.prompt(query)
        return Plan(prompt.messages, payload, prompt.tokens, prompt.notes)


class P2PPerQuery(P2P):
    spec = MethodSpec("p2p-per-query",
                      "hypernetwork LoRA from the per-query profile (+ BM25 top-k items)",
                      _NEEDS | {"summary"}, adapter="query", uses=_USES)
    per_query = True

    def profile_text(self, user: UserRecord, query: Query | None) -> str | None:
        assert query is not None
        return self.env.profile(user, query=query.input).text


class _DonorProfile(P2P):
    """A variant that embeds another evaluated user's profile (``env.donor``)."""

    def fingerprint(self) -> dict[str, Any]:  # donors depend on who else is evaluated
        return {**super().fingerprint(), "users": sorted(u.user_id for u in self.env.users)}


class P2PShuffled(_DonorProfile):
    spec = MethodSpec("p2p-shuffled", "ablation: another user's per-user profile",
                      _NEEDS | {"summary"}, adapter="user", uses=_USES)

    def profile_text(self, user: UserRecord, query: Query | None) -> str | None:
        return self.user_profile(self.env.donor(user))


class P2PPerQueryShuffled(_DonorProfile):
    spec = MethodSpec("p2p-per-query-shuffled",
                      "ablation: another user's per-query profile (their items for this query)",
                      _NEEDS | {"summary"}, adapter="query", uses=_USES)
    per_query = True

    def profile_text(self, user: UserRecord, query: Query | None) -> str | None:
        assert query is not None
        return self.env.profile(self.env.donor(user), query=query.input).text


class P2PRandom(P2P):
    spec = MethodSpec("p2p-random", "ablation: a random unit vector as the profile embedding",
                      _NEEDS, adapter="user", uses=_USES)

    def embedding(self, user: UserRecord, query: Query | None) -> np.ndarray:
        dim = self.env.checkpoint().info.embedding_dim
        salt = int(hashlib.sha256(user.user_id.encode()).hexdigest()[:8], 16)
        vec = np.random.default_rng([self.env.settings.seed, salt]).normal(size=dim)
        return (vec / np.linalg.norm(vec)).astype(np.float32)


class P2PSummaryOnly(P2P):
    spec = MethodSpec("p2p-summary-only", "ablation: the profile's summary alone",
                      _NEEDS | {"summary"}, adapter="user", uses=_USES)

    def profile_text(self, user: UserRecord, query: Query | None) -> str | None:
        if self.env.summary(user) is None:
            raise EvaluationError("p2p-summary-only needs summaries: do not turn them off")
        return self.env.profile(user, statistics=False, k=0).text


class P2PRetrievalOnly(P2P):
    spec = MethodSpec("p2p-retrieval-only",
                      "ablation: the retrieved items alone (per query, no summary or statistics)",
                      _NEEDS, adapter="query", uses=_USES)
    per_query = True

    def profile_text(self, user: UserRecord, query: Query | None) -> str | None:
        assert query is not None
        return self.env.profile(user, query=query.input, summary=False, statistics=False).text
