"""The hypernetwork: one profile embedding in, a full set of LoRA matrices out.

Owns :class:`HyperNetSettings` (sizes), :class:`HyperNetwork` (the torch module) and
:class:`LoraWeights` (its output). For every target (module m, layer l) the input row is
``[TaskEncoder(w(e)) | LN(E_mod[m]) | LN(E_dep[l])]``, where ``w`` is an optional fixed
whitening fitted on the training profiles: profiles of one task share most of their embedding
(the user's part is a few percent of it), and whitening gives every direction the same
variance, so the user's part weighs as much as the task's. All rows of all users go through
one trunk (mixer, pre-LN residual MLP blocks, output MLP) as a single batch, then one linear
head per module type emits ``A`` (r x in) and ``B`` (out x r). Heads start with zero weights
and a PEFT-style bias (A kaiming-uniform, B zero), so an untrained network yields a zero update.
With ``shared_lora`` the network also owns one learned LoRA per (module, layer), added to every
user's ``A`` and ``B``: started from an MT-LoRA (:meth:`HyperNetwork.start_from_lora`), the
network begins as that adapter and learns what each user changes in it.
Does not own checkpoint files (checkpoint.py) or applying the weights (inject.py, adapter.py).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields
from typing import Any, cast

import torch
from torch import Tensor, nn

from p2p_local.errors import ConfigError
from p2p_local.hypernet.targets import TargetSpec

WHITENING_SHRINKAGE = 0.1  # eigenvalue floor of the input whitening, as a share of their mean


@dataclass(frozen=True)
class HyperNetSettings:
    """Sizes of the hypernetwork. The defaults keep a checkpoint for SmolLM2 q/v near 30 MB."""

    embedding_dim: int = 384  # size of the profile embedding (all-MiniLM-L6-v2: 384)
    task_dim: int = 128  # TaskEncoder output (Linear + LayerNorm)
    module_dim: int = 64  # learned embedding per module type
    depth_dim: int = 64  # learned embedding per layer
    hidden_mult: int = 4  # expansion of the mixer and residual MLPs (d -> mult*d -> d)
    n_blocks: int = 2  # pre-LayerNorm residual MLP blocks
    head_in: int = 384  # width entering the per-module output heads
    dropout: float = 0.05
    whiten_input: bool = False  # whiten the embedding (statistics of the training profiles)
    whiten_shrinkage: float = WHITENING_SHRINKAGE  # eigenvalue floor, as a share of their mean
    shared_lora: bool = False  # a learned LoRA added to every user's (see HyperNetwork)

    def __post_init__(self) -> None:
        for f in fields(self):
            value = getattr(self, f.name)
            if f.name in ("whiten_input", "shared_lora"):
                if not isinstance(value, bool):
                    raise ConfigError(f"HyperNetSettings.{f.name}={value!r} must be true/false")
            elif f.name == "whiten_shrinkage":
                if not (isinstance(value, (int, float)) and not isinstance(value, bool)
                        and value > 0.0):
                    raise ConfigError(f"HyperNetSettings.whiten_shrinkage={value!r} must be > 0")
            elif f.name == "dropout":
                if not (isinstance(value, (int, float)) and 0.0 <= value < 1.0):
                    raise ConfigError(f"HyperNetSettings.dropout={value!r} must be in [0, 1)")
            elif f.name == "n_blocks":
                if not isinstance(value, int) or isinstance(value, bool) or value < 0:
                    raise ConfigError(f"HyperNetSettings.n_blocks={value!r} must be an int >= 0")
            elif not isinstance(value, int) or isinstance(value, bool) or value <= 0:
                raise ConfigError(f"HyperNetSettings.{f.name}={value!r} must be a positive int")

    @property
    def row_dim(self) -> int:
        """Width of one (module, layer) row through the trunk."""
        return self.task_dim + self.module_dim + self.depth_dim

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> HyperNetSettings:
        known = {f.name for f in fields(cls)}
        unknown = set(data) - known
        if unknown:
            raise ConfigError(f"unknown HyperNetSettings fields {sorted(unknown)}")
        return cls(**data)


@dataclass
class LoraWeights:
    """LoRA matrices for a batch of users: per module, ``a`` [B, L, r, in], ``b`` [B, L, out, r]."""

    a: dict[str, Tensor]
    b: dict[str, Tensor]
    scale: float

    @property
    def batch_size(self) -> int:
        return next(iter(self.a.values())).shape[0]

    def select(self, index: int | slice | Tensor) -> LoraWeights:
        """The weights of some users (keeps the batch dimension)."""
        if isinstance(index, int):
            index = slice(index, index + 1)
        return LoraWeights(
            {k: v[index] for k, v in self.a.items()},
            {k: v[index] for k, v in self.b.items()},
            self.scale,
        )

    def squared_mean(self) -> Tensor:
        """The weight regulariser: the sum over module types of mean(A^2) + mean(B^2)."""
        terms = [v.pow(2).mean() for v in self.a.values()]
        terms += [v.pow(2).mean() for v in self.b.values()]
        return torch.stack(terms).sum()

    def relative_distance(self, reference: LoraWeights) -> Tensor:
        """How far each user's updates ``B @ A`` are from ``reference``'s, per user [B]:
        sum over layers of ||BA - B0A0||^2 / sum of ||B0A0||^2, averaged over module types.

        Computed on r x r Gram matrices (never the full update), so it costs little more
        than the LoRA matrices themselves. The LoRA scale is common to both and cancels.
        """
        terms = []
        for name, a in self.a.items():
            a0, b0 = reference.a[name], reference.b[name]
            left = torch.cat([self.b[name], -b0], dim=-1)  # [B, L, out, 2r]
            right = torch.cat([a, a0], dim=-2)  # [B, L, 2r, in]
            # ||left @ right||_F^2 = sum((left^T left) * (right right^T))
            gap = (left.transpose(-1, -2) @ left) * (right @ right.transpose(-1, -2))
            gap_sq = gap.sum(dim=(-1, -2)).clamp_min(0.0).sum(dim=-1)  # [B]
            ref = (b0.transpose(-1, -2) @ b0) * (a0 @ a0.transpose(-1, -2))
            ref_sq = ref.sum(dim=(-1, -2)).sum(dim=-1)
            terms.append(gap_sq / ref_sq.clamp_min(1e-12))
        return torch.stack(terms).mean(dim=0)


class _ResidualBlock(nn.Module):
    """x + MLP(LayerNorm(x))."""

    def __init__(self, dim: int, mult: int, dropout: float) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(dim)
        self.mlp = nn.Sequential(
            nn.Dropout(dropout),
            nn.Linear(dim, mult * dim),
            nn.SiLU(),
            nn.Linear(mult * dim, dim),
        )

    def forward(self, x: Tensor) -> Tensor:
        return x + self.mlp(self.norm(x))


class HyperNetwork(nn.Module):
    """Profile embedding [B, D] -> :class:`LoraWeights` for every target module and layer."""

    input_mean: Tensor  # buffers, present when settings.whiten_input
    input_whitener: Tensor

    def __init__(self, settings: HyperNetSettings, targets: TargetSpec) -> None:
        super().__init__()
        self.settings = settings
        self.targets = targets
        s, r = settings, targets.rank
        d = s.row_dim
        if s.whiten_input:  # identity until fit_whitening; saved with the weights
            self.register_buffer("input_mean", torch.zeros(s.embedding_dim))
            self.register_buffer("input_whitener", torch.eye(s.embedding_dim))
        self.task_encoder = nn.Sequential(
            nn.Linear(s.embedding_dim, s.task_dim), nn.LayerNorm(s.task_dim)
        )
        self.module_emb = nn.Embedding(len(targets.modules), s.module_dim)
        self.module_norm = nn.LayerNorm(s.module_dim)
        self.depth_emb = nn.Embedding(targets.n_layers, s.depth_dim)
        self.depth_norm = nn.LayerNorm(s.depth_dim)
        self.mixer = nn.Sequential(
            nn.Dropout(s.dropout),
            nn.Linear(d, s.hidden_mult * d),
            nn.SiLU(),
            nn.Linear(s.hidden_mult * d, d),
            nn.SiLU(),
        )
        self.blocks = nn.ModuleList(
            _ResidualBlock(d, s.hidden_mult, s.dropout) for _ in range(s.n_blocks)
        )
        self.output = nn.Sequential(nn.LayerNorm(d), nn.Linear(d, s.head_in), nn.SiLU())
        self.heads = nn.ModuleDict(
            {
                m.name: nn.Linear(s.head_in, r * (m.in_features + m.out_features))
                for m in targets.modules
            }
        )
        if s.shared_lora:  # zero until start_from_lora; saved with the weights
            self.shared_a = nn.ParameterDict({
                m.name: nn.Parameter(torch.zeros(targets.n_layers, r, m.in_features))
                for m in targets.modules
            })
            self.shared_b = nn.ParameterDict({
                m.name: nn.Parameter(torch.zeros(targets.n_layers, m.out_features, r))
                for m in targets.modules
            })
        self.reset_heads()

    def _head(self, module: str) -> nn.Linear:
        return cast(nn.Linear, self.heads[module])

    # --- initialisation ------------------------------------------------------------------

    @torch.no_grad()
    def reset_heads(self) -> None:
        """bias-HyperInit: zero head weights; bias = A kaiming-uniform (as PEFT), B zero."""
        r = self.targets.rank
        for m in self.targets.modules:
            head = self._head(m.name)
            head.weight.zero_()
            a = torch.empty(r, m.in_features)
            nn.init.kaiming_uniform_(a, a=math.sqrt(5))  # PEFT's lora_A init
            head.bias.zero_()
            head.bias[: r * m.in_features] = a.flatten()

    @torch.no_grad()
    def start_from_lora(self, a: dict[str, Tensor], b: dict[str, Tensor]) -> None:
        """Make the shared LoRA ``a`` [L, r, in] / ``b`` [L, out, r] per module (an MT-LoRA) and
        zero the heads' biases: the network then yields exactly that adapter for every user."""
        if not self.settings.shared_lora:
            raise ConfigError("this hypernetwork was built with shared_lora = false")
        for m in self.targets.modules:
            want_a, want_b = self.shared_a[m.name].shape, self.shared_b[m.name].shape
            if a[m.name].shape != want_a or b[m.name].shape != want_b:
                raise ConfigError(
                    f"the starting LoRA's {m.name} tensors are {tuple(a[m.name].shape)} / "
                    f"{tuple(b[m.name].shape)}, this hypernetwork makes {tuple(want_a)} / "
                    f"{tuple(want_b)}: use one trained for the same base model and targets"
                )
            self.shared_a[m.name].copy_(a[m.name])
            self.shared_b[m.name].copy_(b[m.name])
            self._head(m.name).bias.zero_()

    @torch.no_grad()
    def randomize_heads(
        self, seed: int = 0, weight_std: float = 0.001, b_bias_std: float = 0.005
    ) -> None:
        """Random, non-zero heads (B included), so an untrained network gives real adapters.

        For tests and benchmarks that need a non-trivial, embedding-dependent LoRA before a
        trained checkpoint exists. The rest of the network keeps its initialisation.
        """
        gen = torch.Generator().manual_seed(seed)
        r = self.targets.rank
        for m in self.targets.modules:
            head = self._head(m.name)
            head.weight.copy_(torch.randn(head.weight.shape, generator=gen) * weight_std)
            n_a = r * m.in_features
            head.bias[n_a:] = torch.randn(head.bias.shape[0] - n_a, generator=gen) * b_bias_std

    @torch.no_grad()
    def fit_whitening(self, embeddings: Tensor, shrinkage: float | None = None) -> None:
        """Fit the input whitening (ZCA) on training profile embeddings [N, D].

        Eigenvalues are shrunk towards their mean (``lambda + shrinkage * mean(lambda)``) so
        directions the training profiles never vary in are not blown up into noise;
        ``shrinkage`` defaults to the settings' ``whiten_shrinkage``.
        """
        if not self.settings.whiten_input:
            raise ConfigError("this hypernetwork was built with whiten_input = false")
        if shrinkage is None:
            shrinkage = self.settings.whiten_shrinkage
        x = embeddings.detach().to(torch.float64)
        if x.dim() != 2 or x.shape[1] != self.settings.embedding_dim or x.shape[0] < 2:
            raise ConfigError(
                f"whitening needs [N >= 2, {self.settings.embedding_dim}] embeddings, "
                f"got {tuple(x.shape)}"
            )
        mean = x.mean(0)
        cov = torch.cov((x - mean).T)
        eigvals, eigvecs = torch.linalg.eigh(cov)
        eigvals = eigvals.clamp_min(0.0)
        scale = (eigvals + shrinkage * eigvals.mean()).rsqrt()
        whitener = (eigvecs * scale) @ eigvecs.T
        self.input_mean.copy_(mean.to(self.input_mean.dtype))
        self.input_whitener.copy_(whitener.to(self.input_whitener.dtype))

    # --- forward -------------------------------------------------------------------------

    def forward(self, embedding: Tensor) -> LoraWeights:
        """``embedding`` [B, D] (or [D]) -> LoRA matrices for all B users in one pass."""
        if embedding.dim() == 1:
            embedding = embedding.unsqueeze(0)
        if embedding.dim() != 2 or embedding.shape[1] != self.settings.embedding_dim:
            raise ConfigError(
                f"embedding has shape {tuple(embedding.shape)}; this hypernetwork expects "
                f"[batch, {self.settings.embedding_dim}]: use the embedding model it was made for"
            )
        n_users, n_mod, n_layers = (
            embedding.shape[0],
            len(self.targets.modules),
            self.targets.n_layers,
        )
        if self.settings.whiten_input:
            embedding = (embedding - self.input_mean) @ self.input_whitener
        task = self.task_encoder(embedding)  # [B, t]
        mod = self.module_norm(self.module_emb.weight)  # [M, dm]
        dep = self.depth_norm(self.depth_emb.weight)  # [L, dd]
        rows = torch.cat(
            [
                task[:, None, None, :].expand(n_users, n_mod, n_layers, -1),
                mod[None, :, None, :].expand(n_users, n_mod, n_layers, -1),
                dep[None, None, :, :].expand(n_users, n_mod, n_layers, -1),
            ],
            dim=-1,
        )  # [B, M, L, d]: every (module, layer) row of every user, one batch
        x = self.mixer(rows)
        for block in self.blocks:
            x = block(x)
        x = self.output(x)  # [B, M, L, head_in]

        r = self.targets.rank
        a_out: dict[str, Tensor] = {}
        b_out: dict[str, Tensor] = {}
        for i, m in enumerate(self.targets.modules):
            flat = self._head(m.name)(x[:, i])  # [B, L, r*(in+out)]
            n_a = r * m.in_features
            a_out[m.name] = flat[..., :n_a].reshape(n_users, n_layers, r, m.in_features)
            b_out[m.name] = (
                flat[..., n_a:].reshape(n_users, n_layers, r, m.out_features).transpose(-1, -2)
            )
            if self.settings.shared_lora:
                a_out[m.name] = a_out[m.name] + self.shared_a[m.name]
                b_out[m.name] = b_out[m.name] + self.shared_b[m.name]
        return LoraWeights(a_out, b_out, self.targets.scale)

    def n_params(self) -> int:
        return sum(p.numel() for p in self.parameters())
