"""User profiles: BM25 retrieval, the LLM-written summary and history statistics.

``builder.build_profile`` turns a list of history items (and an optional summary) into a
:class:`~p2p_local.profile.builder.Profile` without any vault; ``builder.VaultProfiler`` does the
same for one user's vault, caching the summary encrypted in it. Modules: ``retrieval`` (BM25),
``summarize`` (prompt, context-window policy, cleaning, encrypted cache), ``statistics``
(ratings and labels), ``builder`` (the profile text and its embedding instruction).
"""

from __future__ import annotations

from p2p_local.profile.builder import (
    EMBED_INSTRUCTION,
    Profile,
    ProfileSettings,
    ProfileViewCache,
    VaultProfiler,
    build_profile,
    wrap_for_embedding,
)
from p2p_local.profile.retrieval import BM25Index, Retrieved, tokenize
from p2p_local.profile.statistics import HistoryStatistics, compute_statistics

# ``summarize`` (the function) is not re-exported: it would hide the submodule of the same name.
from p2p_local.profile.summarize import DEFAULT_TASK, Summary, SummarySettings

__all__ = [
    "BM25Index",
    "DEFAULT_TASK",
    "EMBED_INSTRUCTION",
    "HistoryStatistics",
    "Profile",
    "ProfileSettings",
    "ProfileViewCache",
    "Retrieved",
    "Summary",
    "SummarySettings",
    "VaultProfiler",
    "build_profile",
    "compute_statistics",
    "tokenize",
    "wrap_for_embedding",
]
