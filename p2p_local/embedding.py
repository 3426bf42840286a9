"""Profile text -> unit-norm float32 vector, the hypernetwork's input.

Owns the embedders: :class:`Embedder` (any sentence-transformers folder; by default the
registry's ``embedding`` model, all-MiniLM-L6-v2) and :class:`HiddenStateEmbedder` (the base
LLM's last hidden state, mean-pooled over the tokens), plus :func:`load_embedder`, which picks one
from a name or a path. Every embedder records a ``model_id`` (name and content hash), so a
hypernetwork checkpoint can refuse vectors from another model. Does not own the profile text
(``profile/``) or what the vectors are used for.

Vectors are float32 and unit-norm (L2); the same text gives the same vector on the same
machine and batch size (eval mode, no dropout). Batches of different size may differ in the last
float bits, which is why training precomputes each user's vector once.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np

from p2p_local.errors import ConfigError, ModelFormatError, P2PError

if TYPE_CHECKING:
    import torch

DEFAULT_BATCH_SIZE = 32
DEFAULT_MAX_SEQ_LENGTH = 512


class TextEmbedder(Protocol):
    """What the profile and hypernetwork stages need from an embedder."""

    model_id: str
    dim: int

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        """Vectors [len(texts), dim], float32, each of unit L2 norm."""
        ...


def _unit_rows(vectors: np.ndarray) -> np.ndarray:
    """Rows scaled to unit L2 norm in float32 (a zero row stays zero)."""
    out = np.asarray(vectors, dtype=np.float32)
    norms = np.linalg.norm(out.astype(np.float64), axis=1, keepdims=True)
    norms[norms == 0] = 1.0
    return (out / norms).astype(np.float32)


def _check_texts(texts: Sequence[str]) -> list[str]:
    if isinstance(texts, str):
        raise ConfigError("embed() takes a list of texts, got one string: wrap it in a list")
    out = list(texts)
    for i, t in enumerate(out):
        if not isinstance(t, str):
            raise ConfigError(f"texts[{i}] must be a string, got {type(t).__name__}")
    return out


def _content_id(path: Path) -> str:
    """``name@hash12`` of a model file or folder: the registry's name when the content is a
    registered model (so the same model gets the same id however it is loaded), else its own."""
    from p2p_local.registry import load_registry, sha256_file, tree_sha256

    digest = tree_sha256(path) if path.is_dir() else sha256_file(path)
    name = path.parent.name if path.name in ("model", "models") else path.name
    try:
        for entry in load_registry().entries.values():
            if entry.sha256 == digest:
                name = entry.name
                break
    except P2PError:  # an unreadable registry only costs the friendly name
        pass
    return f"{name}@{digest[:12]}"


def _registry_model(name: str) -> tuple[Path, str]:
    """Path and id of a registered model (fetched and verified on first use)."""
    from p2p_local.registry import load_registry

    registry = load_registry()
    entry = registry.get(name)
    return registry.path(name), f"{entry.name}@{entry.sha256[:12]}"


class Embedder:
    """A sentence-transformers model from a folder.

    model_dir:      a sentence-transformers folder; None loads the registry's ``embedding``
                    model (fetched on first use).
    device:         torch device ("cpu", "cuda", ...).
    max_seq_length: tokens read per text, at most the model's position limit; longer text is
                    cut. Default 512: a profile (summary, statistics, two items) runs to
                    300-450 tokens, and MiniLM's own 256 would cut off the retrieved items.
                    None keeps the model's own setting. A length other than the model's own
                    is part of ``model_id`` (``...+len512``), since it changes the vectors.
    batch_size:     texts per forward pass in :meth:`embed`.
    """

    def __init__(
        self,
        model_dir: str | Path | None = None,
        *,
        device: str = "cpu",
        max_seq_length: int | None = DEFAULT_MAX_SEQ_LENGTH,
        batch_size: int = DEFAULT_BATCH_SIZE,
    ) -> None:
        if batch_size < 1:
            raise ConfigError(f"batch_size must be >= 1, got {batch_size}")
        if model_dir is None:
            path, model_id = _registry_model("embedding")
        else:
            path = Path(model_dir).expanduser()
            if not (path / "modules.json").is_file() and not (path / "config.json").is_file():
                raise ModelFormatError(
                    f"{path} is not a sentence-transformers folder (no modules.json or "
                    "config.json): give the folder that holds the model"
                )
            model_id = _content_id(path)
        from sentence_transformers import SentenceTransformer
        from transformers.utils import logging as hf_logging

        bars = hf_logging.is_progress_bar_enabled()
        hf_logging.disable_progress_bar()  # no "Loading weights" bar on every CLI call
        try:
            self._model = SentenceTransformer(str(path), device=device, local_files_only=True)
        except (OSError, ValueError) as exc:
            raise ModelFormatError(f"cannot load embedding model from {path}: {exc}") from exc
        finally:
            if bars:
                hf_logging.enable_progress_bar()
        self._model.eval()
        own = int(self._model.max_seq_length or 0)
        if max_seq_length is not None:
            if not isinstance(max_seq_length, int) or max_seq_length < 8:
                raise ConfigError(f"max_seq_length must be an integer >= 8, got {max_seq_length!r}")
            transformer = getattr(self._model[0], "auto_model", None)
            limit = getattr(getattr(transformer, "config", None), "max_position_embeddings", None)
            self._model.max_seq_length = min(max_seq_length, limit or max_seq_length)
        if self._model.max_seq_length != own:  # other vectors for long texts: another id
            model_id = f"{model_id}+len{self._model.max_seq_length}"
        self.path = path
        self.model_id = model_id
        self.batch_size = batch_size
        get_dim = (
            getattr(self._model, "get_embedding_dimension", None)
            or self._model.get_sentence_embedding_dimension
        )
        dim = get_dim()
        if dim is None:
            dim = int(self._model.encode(["x"], convert_to_numpy=True).shape[1])
        self.dim = int(dim)

    @property
    def max_seq_length(self) -> int:
        """Tokens read per text; the rest of a longer text is ignored."""
        return int(self._model.max_seq_length or 0)

    def count_tokens(self, text: str) -> int:
        """Tokens in ``text`` under the embedder's tokenizer (special tokens included)."""
        return len(self._model.tokenizer(text, add_special_tokens=True)["input_ids"])

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        """Vectors [len(texts), dim], float32, unit norm."""
        batch = _check_texts(texts)
        if not batch:
            return np.zeros((0, self.dim), dtype=np.float32)
        vectors = self._model.encode(
            batch,
            batch_size=self.batch_size,
            convert_to_numpy=True,
            normalize_embeddings=True,
            show_progress_bar=False,
        )
        return _unit_rows(vectors)

    def embed_one(self, text: str) -> np.ndarray:
        """One vector [dim]."""
        return self.embed([text])[0]


class HiddenStateEmbedder:
    """The base LLM as an embedder: last hidden state, mean-pooled over the text's tokens.

    Build it from a loaded transformers model (``HiddenStateEmbedder(model, tokenizer,
    model_id=...)``, e.g. the trainer's base model, or ``HFBackend.base_model``) or load one with
    :meth:`from_path`. Any model that returns ``hidden_states`` works (causal LMs included).

    max_seq_length: tokens read per text (longer text is cut).
    batch_size:     texts per forward pass.
    """

    def __init__(
        self,
        model: Any,
        tokenizer: Any,
        *,
        model_id: str,
        max_seq_length: int = 512,
        batch_size: int = 8,
    ) -> None:
        if batch_size < 1:
            raise ConfigError(f"batch_size must be >= 1, got {batch_size}")
        if max_seq_length < 8:
            raise ConfigError(f"max_seq_length must be >= 8, got {max_seq_length}")
        if not model_id:
            raise ConfigError("model_id must name the model (it is recorded with every vector)")
        self.model = model.eval()
        self.tokenizer = tokenizer
        if self.tokenizer.pad_token_id is None:  # padded positions are masked out anyway
            self.tokenizer.pad_token = self.tokenizer.eos_token
        self.max_seq_length = max_seq_length
        self.batch_size = batch_size
        self.dim = int(model.config.hidden_size)
        self.model_id = model_id

    @classmethod
    def from_path(
        cls,
        model_path: str | Path | None = None,
        *,
        device: str = "cpu",
        dtype: torch.dtype | None = None,
        max_seq_length: int = 512,
        batch_size: int = 8,
    ) -> HiddenStateEmbedder:
        """Load a GGUF file (dequantized by transformers: slow, ~20 s for the default base) or
        a transformers folder; None loads the registry's ``base`` model."""
        import torch
        from transformers import AutoModel, AutoTokenizer

        if model_path is None:
            path, base_id = _registry_model("base")
        else:
            path = Path(model_path).expanduser()
            if not path.exists():
                raise ModelFormatError(f"{path} does not exist: give a GGUF file or model folder")
            base_id = _content_id(path)
        source, extra = (str(path.parent), {"gguf_file": path.name}) if path.is_file() else (
            str(path), {})
        try:
            tokenizer = AutoTokenizer.from_pretrained(source, **extra)
            model = AutoModel.from_pretrained(source, dtype=dtype or torch.float32, **extra)
        except (OSError, ValueError) as exc:
            raise ModelFormatError(f"cannot load {path} as a transformers model: {exc}") from exc
        return cls(
            model.to(device),
            tokenizer,
            model_id=f"{base_id}:mean-last-hidden",
            max_seq_length=max_seq_length,
            batch_size=batch_size,
        )

    def count_tokens(self, text: str) -> int:
        return len(self.tokenizer(text)["input_ids"])

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        """Vectors [len(texts), hidden_size], float32, unit norm."""
        import torch

        batch = _check_texts(texts)
        out = np.zeros((len(batch), self.dim), dtype=np.float32)
        device = next(self.model.parameters()).device
        for start in range(0, len(batch), self.batch_size):
            chunk = batch[start : start + self.batch_size]
            side = self.tokenizer.padding_side  # the tokenizer may be shared: restore it
            self.tokenizer.padding_side = "right"
            try:
                enc = self.tokenizer(
                    chunk,
                    padding=True,
                    truncation=True,
                    max_length=self.max_seq_length,
                    return_tensors="pt",
                ).to(device)
            finally:
                self.tokenizer.padding_side = side
            with torch.inference_mode():
                result = self.model(**enc, output_hidden_states=True)
            hidden = result.hidden_states[-1].float()
            mask = enc["attention_mask"].unsqueeze(-1).to(hidden.dtype)
            pooled = (hidden * mask).sum(dim=1) / mask.sum(dim=1).clamp(min=1.0)
            out[start : start + len(chunk)] = pooled.cpu().numpy()
        return _unit_rows(out)

    def embed_one(self, text: str) -> np.ndarray:
        return self.embed([text])[0]


def load_embedder(spec: str | Path | None = None, *, device: str = "cpu") -> TextEmbedder:
    """An embedder from a name or path.

    - None or ``"embedding"``: the registry's default sentence-transformers model;
    - ``"base"`` or ``"hidden:base"``: the registry's base LLM as a :class:`HiddenStateEmbedder`;
    - ``"hidden:PATH"``: that GGUF file or transformers folder as a hidden-state embedder;
    - a registered model name: that model (by its kind);
    - a folder path: sentence-transformers when it has ``modules.json``, else hidden-state;
    - a ``.gguf`` file path: hidden-state.
    """
    if spec is None or str(spec) == "embedding":
        return Embedder(device=device)
    text = str(spec)
    if text in ("base", "hidden:base"):
        return HiddenStateEmbedder.from_path(device=device)
    if text.startswith("hidden:"):
        return HiddenStateEmbedder.from_path(text[len("hidden:") :], device=device)
    path = Path(text).expanduser()
    if path.exists():
        if path.is_dir() and (path / "modules.json").is_file():
            return Embedder(path, device=device)
        return HiddenStateEmbedder.from_path(path, device=device)
    from p2p_local.registry import load_registry

    registry = load_registry()
    entry = registry.get(text)  # raises UnknownModelError with the known names
    if entry.kind == "sentence-transformers":
        return Embedder(registry.path(text), device=device)
    return HiddenStateEmbedder.from_path(registry.path(text), device=device)


def max_seq_length_of(model_id: str) -> int | None:
    """The ``max_seq_length`` an :class:`Embedder` needs to reproduce ``model_id``.

    ``name@hash+len512`` -> 512; ``name@hash`` (the model's own length) -> None. A hypernetwork
    records the id of the embedder it was trained with; the facade builds that embedder.
    """
    base, sep, suffix = model_id.rpartition("+len")
    if sep and base and suffix.isdigit():
        return int(suffix)
    return None


def fingerprint(vector: np.ndarray) -> str:
    """A short hash of a vector's bytes (to compare vectors in logs without printing them)."""
    return hashlib.sha256(np.ascontiguousarray(vector, dtype=np.float32).tobytes()).hexdigest()[:16]
