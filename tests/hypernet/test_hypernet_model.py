"""HyperNetwork: shapes, bias-HyperInit (zero update), batching, settings validation, size."""

from __future__ import annotations

import dataclasses
import math

import pytest
import torch
from tiny_models import SMALL_HYPERNET, tiny_llama_config

from p2p_local.errors import ConfigError
from p2p_local.hypernet.model import HyperNetSettings, HyperNetwork
from p2p_local.hypernet.targets import TargetModule, TargetSpec

SMALL = SMALL_HYPERNET


def tiny_targets() -> TargetSpec:
    return TargetSpec.from_config(tiny_llama_config())


def smollm2_targets() -> TargetSpec:
    """The default base model's q/v layout (SmolLM2-135M: 30 layers, hidden 576, 3 KV heads)."""
    q = TargetModule("q_proj", "model.layers.{layer}.self_attn.q_proj", 576, 576)
    v = TargetModule("v_proj", "model.layers.{layer}.self_attn.v_proj", 576, 192)
    return TargetSpec((q, v), 30, n_head=9, n_head_kv=3)


def test_output_shapes() -> None:
    targets = tiny_targets()
    net = HyperNetwork(SMALL, targets)
    w = net(torch.randn(5, 16))
    assert w.batch_size == 5
    assert w.a["q_proj"].shape == (5, 3, 8, 32)
    assert w.b["q_proj"].shape == (5, 3, 32, 8)
    assert w.a["v_proj"].shape == (5, 3, 8, 32)
    assert w.b["v_proj"].shape == (5, 3, 16, 8)
    assert w.scale == pytest.approx(16 / math.sqrt(8))


def test_untrained_network_gives_zero_update_and_peft_style_a() -> None:
    net = HyperNetwork(SMALL, tiny_targets())
    w1, w2 = net(torch.randn(1, 16)), net(torch.randn(1, 16))
    for name in ("q_proj", "v_proj"):
        assert torch.count_nonzero(w1.b[name]) == 0
        # A is PEFT's kaiming-uniform init (bound 1/sqrt(fan_in)), the same for every user
        a = w1.a[name]
        assert torch.equal(a, w2.a[name])
        assert a.abs().max() <= 1 / math.sqrt(32) + 1e-6
        assert a.std() > 0.5 / math.sqrt(3 * 32)
        assert all(p.abs().max() == 0 for p in [net.heads[name].weight])


def test_randomized_heads_give_user_dependent_nonzero_b() -> None:
    net = HyperNetwork(SMALL, tiny_targets())
    net.randomize_heads(seed=3)
    e = torch.randn(2, 16)
    w = net(e)
    for name in ("q_proj", "v_proj"):
        assert torch.count_nonzero(w.b[name]) == w.b[name].numel()
        assert not torch.allclose(w.b[name][0], w.b[name][1])
        assert not torch.allclose(w.a[name][0], w.a[name][1])


def test_batch_equals_one_by_one() -> None:
    net = HyperNetwork(SMALL, tiny_targets()).eval()
    net.randomize_heads(seed=1)
    e = torch.randn(4, 16)
    batch = net(e)
    for i in range(4):
        single = net(e[i])
        for name in ("q_proj", "v_proj"):
            torch.testing.assert_close(single.a[name][0], batch.a[name][i], rtol=1e-5, atol=1e-6)
            torch.testing.assert_close(single.b[name][0], batch.b[name][i], rtol=1e-5, atol=1e-6)


def test_layers_and_modules_get_different_weights() -> None:
    net = HyperNetwork(SMALL, tiny_targets()).eval()
    net.randomize_heads(seed=0)
    w = net(torch.randn(1, 16))
    b = w.b["q_proj"][0]
    assert not torch.allclose(b[0], b[1])


def test_wrong_embedding_size_refused() -> None:
    net = HyperNetwork(SMALL, tiny_targets())
    with pytest.raises(ConfigError, match="16"):
        net(torch.randn(2, 17))


@pytest.mark.parametrize(
    ("field", "value"),
    [("embedding_dim", 0), ("head_in", -3), ("dropout", 1.0), ("n_blocks", -1), ("task_dim", 2.5)],
)
def test_settings_validation_names_field(field: str, value: object) -> None:
    with pytest.raises(ConfigError, match=field):
        HyperNetSettings(**{field: value})


def test_settings_round_trip() -> None:
    assert HyperNetSettings.from_dict(SMALL.to_dict()) == SMALL
    with pytest.raises(ConfigError, match="bogus"):
        HyperNetSettings.from_dict({**SMALL.to_dict(), "bogus": 1})


def test_default_size_fits_40_mb_for_default_base() -> None:
    net = HyperNetwork(HyperNetSettings(), smollm2_targets())
    assert net.n_params() * 4 <= 40 * 1024 * 1024


def test_weight_regulariser() -> None:
    net = HyperNetwork(SMALL, tiny_targets())
    w = net(torch.randn(2, 16))
    expected = sum(v.pow(2).mean() for v in [*w.a.values(), *w.b.values()])
    torch.testing.assert_close(w.squared_mean(), expected)


def _correlated(n: int, dim: int = 16, seed: int = 0) -> torch.Tensor:
    """Embeddings that share one big direction, like profiles of one task do."""
    gen = torch.Generator().manual_seed(seed)
    common = torch.randn(dim, generator=gen)
    return common + 0.02 * torch.randn(n, dim, generator=gen) @ torch.randn(dim, dim, generator=gen)


def test_whitening_makes_training_embeddings_centred_and_uncorrelated() -> None:
    net = HyperNetwork(dataclasses.replace(SMALL, whiten_input=True), tiny_targets())
    x = _correlated(400)
    net.fit_whitening(x, shrinkage=0.0)
    z = (x - net.input_mean) @ net.input_whitener
    assert z.mean(0).abs().max() < 1e-4
    assert torch.allclose(torch.cov(z.T), torch.eye(16), atol=1e-3)
    # shrinkage keeps low-variance directions below unit variance (no blown-up noise)
    net.fit_whitening(x, shrinkage=0.1)
    z = (x - net.input_mean) @ net.input_whitener
    assert torch.linalg.eigvalsh(torch.cov(z.T)).max() < 1.0


def test_whitening_lets_small_user_differences_reach_the_trunk() -> None:
    x = _correlated(200)
    spread = []
    for whiten in (False, True):
        torch.manual_seed(0)
        net = HyperNetwork(dataclasses.replace(SMALL, whiten_input=whiten), tiny_targets())
        if whiten:
            net.fit_whitening(x)
        net.randomize_heads(seed=1)
        net.eval()
        b = net(x).b["q_proj"].flatten(1)  # [users, everything]
        spread.append(((b - b.mean(0)).norm(dim=1).mean() / b.mean(0).norm()).item())
    # the users' LoRAs differ far more from each other once the shared part is whitened away
    print("relative spread of the LoRAs, raw / whitened:", spread)
    assert spread[1] > 3 * spread[0], spread


def test_whitening_is_off_by_default_and_for_old_settings() -> None:
    net = HyperNetwork(SMALL, tiny_targets())
    assert "input_whitener" not in net.state_dict()
    assert HyperNetSettings.from_dict({"embedding_dim": 16}).whiten_input is False
    with pytest.raises(ConfigError, match="whiten_input"):
        net.fit_whitening(torch.randn(10, 16))
    with pytest.raises(ConfigError, match="true/false"):
        HyperNetSettings(whiten_input=1)  # type: ignore[arg-type]
    whitening = HyperNetwork(dataclasses.replace(SMALL, whiten_input=True), tiny_targets())
    with pytest.raises(ConfigError, match="embeddings"):
        whitening.fit_whitening(torch.randn(10, 7))


def test_whitening_shrinkage_comes_from_the_settings() -> None:
    x = _correlated(300)
    whitened_variance = []
    for shrinkage in (0.1, 1.0):
        settings = dataclasses.replace(SMALL, whiten_input=True, whiten_shrinkage=shrinkage)
        net = HyperNetwork(settings, tiny_targets())
        net.fit_whitening(x)
        z = (x - net.input_mean) @ net.input_whitener
        whitened_variance.append(torch.cov(z.T).trace().item())
    # more shrinkage scales the low-variance directions up less
    assert whitened_variance[1] < 0.8 * whitened_variance[0], whitened_variance
    assert HyperNetSettings.from_dict({"embedding_dim": 16}).whiten_shrinkage == 0.1
    with pytest.raises(ConfigError, match="whiten_shrinkage"):
        HyperNetSettings(whiten_shrinkage=0.0)


def test_shared_lora_starts_as_the_given_adapter_for_every_user() -> None:
    targets = tiny_targets()
    net = HyperNetwork(dataclasses.replace(SMALL, shared_lora=True), targets)
    gen = torch.Generator().manual_seed(0)
    a = {m.name: torch.randn(3, 8, m.in_features, generator=gen) for m in targets.modules}
    b = {m.name: torch.randn(3, m.out_features, 8, generator=gen) for m in targets.modules}
    net.start_from_lora(a, b)
    w = net(torch.randn(4, 16))
    for m in targets.modules:
        assert torch.equal(w.a[m.name], a[m.name].expand(4, -1, -1, -1))
        assert torch.equal(w.b[m.name], b[m.name].expand(4, -1, -1, -1))
    net.randomize_heads(seed=1)  # the users' part then moves each user off the shared LoRA
    w = net(torch.randn(2, 16))
    assert not torch.equal(w.b["q_proj"][0], w.b["q_proj"][1])

    with pytest.raises(ConfigError, match="same base model"):
        net.start_from_lora({**a, "q_proj": a["q_proj"][:, :4]}, b)
    with pytest.raises(ConfigError, match="shared_lora = false"):
        HyperNetwork(SMALL, targets).start_from_lora(a, b)


def test_relative_distance_of_the_updates() -> None:
    from p2p_local.hypernet.model import LoraWeights

    gen = torch.Generator().manual_seed(0)

    def weights() -> LoraWeights:
        a = {"q": torch.randn(3, 2, 4, 10, generator=gen),
             "v": torch.randn(3, 2, 4, 6, generator=gen)}
        b = {"q": torch.randn(3, 2, 10, 4, generator=gen),
             "v": torch.randn(3, 2, 5, 4, generator=gen)}
        return LoraWeights(a, b, scale=2.0)

    mine, ref = weights(), weights()
    expected = []
    for name in ("q", "v"):
        update, start = mine.b[name] @ mine.a[name], ref.b[name] @ ref.a[name]
        gap = (update - start).pow(2).sum(dim=(1, 2, 3))
        expected.append(gap / start.pow(2).sum(dim=(1, 2, 3)))
    assert mine.relative_distance(ref) == pytest.approx(torch.stack(expected).mean(0), rel=1e-4)
    assert ref.relative_distance(ref) == pytest.approx(torch.zeros(3), abs=1e-5)
    # only the product counts: B*c, A/c is the same update
    rescaled = LoraWeights({k: v / 4 for k, v in ref.a.items()},
                           {k: v * 4 for k, v in ref.b.items()}, scale=2.0)
    assert rescaled.relative_distance(ref) == pytest.approx(torch.zeros(3), abs=1e-4)
