"""GGUF export for the qwen2 architecture (no q/k permutation) matches transformers + PEFT.

No Qwen2 model is available offline, so one is made from the default base: the first layers
of SmolLM2 (same weights, zero q/k/v biases) as a transformers ``Qwen2ForCausalLM`` and as a
qwen2-architecture F32 GGUF for llama.cpp (weights in HF layout: llama.cpp uses NEOX rotary
for qwen2). The two agree without an adapter; then the exported qwen2 adapter must agree too.
"""

from __future__ import annotations

import re
from pathlib import Path

import gguf
import numpy as np
import pytest
import torch

from p2p_local.adapter import generate
from p2p_local.export.gguf import gguf_adapter_bytes
from p2p_local.export.peft import peft_config, peft_state_dict
from p2p_local.hypernet.model import HyperNetSettings, HyperNetwork
from p2p_local.hypernet.targets import TargetSpec

pytestmark = pytest.mark.real_model
N_LAYERS = 3
PARITY = 1e-3


@pytest.fixture(scope="module")
def qwen2_pair(_hf_base_session, base_gguf: Path, tmp_path_factory: pytest.TempPathFactory):
    from transformers import Qwen2Config, Qwen2ForCausalLM

    llama = _hf_base_session.base_model
    lc = llama.config
    config = Qwen2Config(
        vocab_size=lc.vocab_size,
        hidden_size=lc.hidden_size,
        intermediate_size=lc.intermediate_size,
        num_hidden_layers=N_LAYERS,
        num_attention_heads=lc.num_attention_heads,
        num_key_value_heads=lc.num_key_value_heads,
        max_position_embeddings=lc.max_position_embeddings,
        rms_norm_eps=lc.rms_norm_eps,
        rope_parameters=lc.rope_parameters,
        tie_word_embeddings=True,
    )
    model = Qwen2ForCausalLM(config).eval().requires_grad_(False)
    state = {
        k: v
        for k, v in llama.state_dict().items()
        if not (m := re.match(r"model\.layers\.(\d+)\.", k)) or int(m[1]) < N_LAYERS
    }
    missing = model.load_state_dict(state, strict=False).missing_keys
    assert missing and all(
        k.endswith(("q_proj.bias", "k_proj.bias", "v_proj.bias")) for k in missing
    )
    for name, param in model.named_parameters():
        if name in missing:
            param.zero_()
    path = tmp_path_factory.mktemp("qwen2") / "qwen2-f32.gguf"
    _write_qwen2_gguf(model, base_gguf, path)
    return model, path


def _write_qwen2_gguf(model, base_gguf: Path, path: Path) -> None:
    """The model's weights as a qwen2 GGUF, with the base GGUF's tokenizer and hyperparameters."""
    reader = gguf.GGUFReader(str(base_gguf))
    writer = gguf.GGUFWriter(str(path), "qwen2")
    for fld in reader.fields.values():
        name = fld.name
        if name.startswith("GGUF.") or name in ("general.architecture", "general.file_type"):
            continue
        value = fld.contents()
        if name.startswith("llama."):
            name = "qwen2." + name[len("llama.") :]
        if name == "qwen2.block_count":
            value = N_LAYERS
        vtype = fld.types[0]
        sub = fld.types[-1] if vtype == gguf.GGUFValueType.ARRAY else None
        writer.add_key_value(name, value, vtype, sub_type=sub)
    writer.add_file_type(gguf.LlamaFileType.ALL_F32)
    names = gguf.get_tensor_name_map(gguf.MODEL_ARCH.QWEN2, N_LAYERS)
    for hf_name, tensor in model.state_dict().items():
        if hf_name == "lm_head.weight":
            continue  # tied to the token embedding
        gguf_name = names.get_name(hf_name, try_suffixes=(".weight", ".bias"))
        assert gguf_name is not None, hf_name
        writer.add_tensor(gguf_name, tensor.float().numpy().copy())
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()


def test_qwen2_adapter_matches(qwen2_pair) -> None:
    from peft import LoraConfig, get_peft_model, set_peft_model_state_dict

    from p2p_local.runtime.llamacpp import LlamaCppBackend

    model, path = qwen2_pair
    targets = TargetSpec.from_model(model, modules=("q_proj", "k_proj", "v_proj"))
    assert targets.model_type == "qwen2"
    net = HyperNetwork(HyperNetSettings(), targets)
    net.randomize_heads(seed=3)
    adapter = generate(net, torch.nn.functional.normalize(torch.randn(384), dim=0))

    llm = LlamaCppBackend(path, f32_kv_cache=True, n_ctx=256)
    try:
        assert llm.arch == "qwen2"
        prompt = llm.prompt_tokens(
            [
                {
                    "role": "user",
                    "content": "Name three quiet hobbies for "
                    "a rainy weekend at home, and say why each one helps.",
                }
            ]
        )
        assert len(prompt) >= 30
        ids = torch.tensor([prompt])
        with torch.inference_mode():
            base = model(ids).logits[0].numpy()
        assert np.abs(llm.eval_logits(prompt) - base).max() <= PARITY  # the pair agrees

        cfg = {
            k: v for k, v in peft_config(adapter).items() if k in LoraConfig.__dataclass_fields__
        }
        peft_model = get_peft_model(model, LoraConfig(**cfg))
        try:
            set_peft_model_state_dict(peft_model, peft_state_dict(adapter))
            with torch.inference_mode():
                reference = peft_model(ids).logits[0].numpy()
        finally:
            peft_model.unload()
        assert np.abs(reference - base).max() > 0.5  # the adapter changes the model

        llm.set_adapter_bytes(gguf_adapter_bytes(adapter))
        assert np.abs(llm.eval_logits(prompt) - reference).max() <= PARITY
    finally:
        llm.close()
