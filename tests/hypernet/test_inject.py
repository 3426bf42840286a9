"""Forward-hook injection: equals PEFT, mixes users in one batch, lets gradients through."""

from __future__ import annotations

import pytest
import torch
from peft import LoraConfig, get_peft_model
from tiny_models import SMALL_HYPERNET, tiny_llama
from transformers import LlamaConfig, LlamaForCausalLM

from p2p_local.errors import AdapterError
from p2p_local.hypernet.inject import LoraInjector, inject_lora
from p2p_local.hypernet.model import HyperNetwork
from p2p_local.hypernet.targets import TargetSpec

SMALL = SMALL_HYPERNET


@pytest.fixture(scope="module")
def tiny() -> LlamaForCausalLM:
    return tiny_llama()  # frozen, as in training


def _net(targets: TargetSpec, seed: int = 0) -> HyperNetwork:
    torch.manual_seed(seed)
    net = HyperNetwork(SMALL, targets)
    net.randomize_heads(seed=seed, weight_std=0.05, b_bias_std=0.05)
    return net


def test_hooks_equal_peft(tiny: LlamaForCausalLM) -> None:
    targets = TargetSpec.from_model(tiny, modules=("q_proj", "v_proj", "down_proj"))
    w = _net(targets).eval()(torch.randn(1, 16))
    ids = torch.randint(0, 64, (2, 7))
    with torch.no_grad():
        base = tiny(ids).logits
        with inject_lora(tiny, targets, w):
            hooked = tiny(ids).logits
        assert (hooked - base).abs().max() > 1e-3  # the adapter does something
        assert torch.equal(tiny(ids).logits, base)  # hooks are gone after the block

        cfg = LoraConfig(
            r=8,
            lora_alpha=16,
            use_rslora=True,
            lora_dropout=0.0,
            target_modules=["q_proj", "v_proj", "down_proj"],
        )
        peft_model = get_peft_model(tiny, cfg)
        try:
            for m in targets.modules:
                for layer in range(targets.n_layers):
                    lora = peft_model.base_model.model.get_submodule(m.module_path(layer))
                    lora.lora_A["default"].weight.copy_(w.a[m.name][0, layer])
                    lora.lora_B["default"].weight.copy_(w.b[m.name][0, layer])
            via_peft = peft_model(ids).logits
        finally:
            peft_model.unload()
    assert (via_peft - hooked).abs().max() <= 1e-6


def test_one_batch_mixes_users(tiny: LlamaForCausalLM) -> None:
    targets = TargetSpec.from_model(tiny)
    w = _net(targets).eval()(torch.randn(3, 16))
    ids = torch.randint(0, 64, (3, 6))
    injector = LoraInjector(tiny, targets)
    try:
        with torch.no_grad():
            injector.set(w)
            mixed = tiny(ids).logits
            for i in range(3):
                injector.set(w.select(i))
                alone = tiny(ids[i : i + 1]).logits
                torch.testing.assert_close(mixed[i : i + 1], alone, rtol=1e-5, atol=1e-5)
            injector.set(w.select(0))  # one LoRA broadcast to every example
            broadcast = tiny(ids).logits
            injector.clear()
            plain = tiny(ids).logits
    finally:
        injector.remove()
    assert not torch.allclose(mixed[1], broadcast[1])
    with torch.no_grad():
        torch.testing.assert_close(tiny(ids).logits, plain)


def test_batch_size_mismatch_refused(tiny: LlamaForCausalLM) -> None:
    targets = TargetSpec.from_model(tiny)
    w = _net(targets).eval()(torch.randn(2, 16))
    with inject_lora(tiny, targets, w), pytest.raises(AdapterError, match="2 LoRAs"):
        tiny(torch.randint(0, 64, (3, 4)))


def test_gradients_reach_the_hypernetwork(tiny: LlamaForCausalLM) -> None:
    targets = TargetSpec.from_model(tiny)
    for randomize in (False, True):  # at bias-HyperInit too: zero B, yet a gradient
        torch.manual_seed(1)
        net = HyperNetwork(SMALL, targets)
        if randomize:
            net.randomize_heads(seed=1, weight_std=0.05, b_bias_std=0.05)
        ids = torch.randint(0, 64, (2, 5))
        w = net(torch.randn(2, 16))
        with inject_lora(tiny, targets, w):
            loss = tiny(ids, labels=ids).loss
        loss.backward()
        assert net.heads["q_proj"].weight.grad.abs().sum() > 0
        assert net.heads["v_proj"].bias.grad.abs().sum() > 0
        if randomize:
            assert net.task_encoder[0].weight.grad.abs().sum() > 0


def test_targets_for_another_model_refused(tiny: LlamaForCausalLM) -> None:
    cfg = LlamaConfig(
        vocab_size=64,
        hidden_size=48,
        intermediate_size=48,
        num_hidden_layers=3,
        num_attention_heads=4,
        num_key_value_heads=2,
    )
    other = TargetSpec.from_config(cfg)
    with pytest.raises(AdapterError, match="another base model"):
        LoraInjector(tiny, other)
