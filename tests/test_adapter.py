"""LoraAdapter and generate(): one forward pass per batch, cache bytes round trip and checks."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from p2p_local.adapter import LoraAdapter, generate, generate_batch, stack_weights
from p2p_local.errors import AdapterError, ConfigError
from p2p_local.hypernet.model import HyperNetSettings, HyperNetwork
from p2p_local.hypernet.targets import TargetModule, TargetSpec

SMALL = HyperNetSettings(embedding_dim=16, task_dim=8, module_dim=4, depth_dim=4, head_in=12)


def net() -> HyperNetwork:
    q = TargetModule("q_proj", "model.layers.{layer}.self_attn.q_proj", 32, 32)
    v = TargetModule("v_proj", "model.layers.{layer}.self_attn.v_proj", 32, 16)
    n = HyperNetwork(SMALL, TargetSpec((q, v), 3, n_head=4, n_head_kv=2))
    n.randomize_heads(seed=0, weight_std=0.05, b_bias_std=0.05)
    return n


def test_generate_matches_batch_and_materialises_float32() -> None:
    hn = net()
    emb = np.random.default_rng(0).normal(size=(3, 16)).astype(np.float32)
    batch = generate_batch(hn, emb, base_model="b", checkpoint_id="c")
    assert len(batch) == 3
    one = generate(hn, emb[1])
    for name in ("q_proj", "v_proj"):
        torch.testing.assert_close(one.a[name], batch[1].a[name], rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(one.b[name], batch[1].b[name], rtol=1e-5, atol=1e-6)
        assert batch[0].a[name].dtype == torch.float32 and batch[0].b[name].is_contiguous()
        assert not batch[0].b[name].requires_grad
    assert (batch[0].base_model, batch[0].checkpoint_id) == ("b", "c")
    assert hn.training  # generate() restores the module's mode


def test_generate_refuses_a_batch() -> None:
    with pytest.raises(AdapterError, match="generate_batch"):
        generate(net(), np.zeros((2, 16), dtype=np.float32))


def test_delta_is_scaled_b_times_a() -> None:
    ad = generate(net(), torch.randn(16))
    d = ad.delta("v_proj", 2)
    assert d.shape == (16, 32)
    torch.testing.assert_close(d, ad.scale * ad.b["v_proj"][2] @ ad.a["v_proj"][2])


def test_bytes_round_trip() -> None:
    ad = generate(net(), torch.randn(16), base_model="base", checkpoint_id="abc")
    back = LoraAdapter.from_bytes(ad.to_bytes())
    assert back.targets == ad.targets
    assert (back.base_model, back.checkpoint_id) == ("base", "abc")
    for name in ("q_proj", "v_proj"):
        assert torch.equal(back.a[name], ad.a[name]) and torch.equal(back.b[name], ad.b[name])


def test_bytes_tampering_refused() -> None:
    data = generate(net(), torch.randn(16)).to_bytes()
    with pytest.raises(AdapterError):
        LoraAdapter.from_bytes(data[:-4])  # truncated
    with pytest.raises(AdapterError, match="pickle"):
        LoraAdapter.from_bytes(b"\x80\x04" + data[2:])


def test_wrong_shapes_refused() -> None:
    ad = generate(net(), torch.randn(16))
    with pytest.raises(AdapterError, match="shapes"):
        LoraAdapter(ad.targets, {**ad.a, "q_proj": ad.a["q_proj"][:2]}, ad.b)


def test_stack_weights() -> None:
    hn = net()
    ads = generate_batch(hn, torch.randn(2, 16))
    w = stack_weights(ads)
    assert w.batch_size == 2
    assert torch.equal(w.b["q_proj"][1], ads[1].b["q_proj"])
    assert ads[0].weights().batch_size == 1


# --- the facade: Personalizer.build_adapter / adapter / export and the chat hook ------------

PASS = "facade passphrase"
REVIEWS = [
    ("The French press filters well and the coffee tastes clean; the lid rattles.", 4.0),
    ("Running shoes fell apart after three months of road running.", 1.0),
    ("A cast iron skillet that sears steak beautifully and goes into the oven.", 5.0),
    ("The espresso grinder is loud but the grind is very even.", 4.0),
]


@pytest.fixture(scope="module")
def embedder(embedding_dir):
    from p2p_local.embedding import Embedder

    return Embedder()  # the registry's default embedding model, as the facade uses


@pytest.fixture(scope="module")
def alice(tmp_path_factory, embedder, _llama_base_session):
    """One user for the facade tests (module-scoped: the profile summary is written once)."""
    from p2p_local.api import Personalizer
    from p2p_local.profile.summarize import SummarySettings
    from p2p_local.store._crypto import KdfParams
    from p2p_local.store.records import HistoryItem

    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("P2P_LOCAL_HOME", str(tmp_path_factory.mktemp("p2p-home")))
        mp.delenv("P2P_LOCAL_PASSPHRASE", raising=False)
        kdf = KdfParams(memory_kib=64, iterations=1, lanes=1)
        p = Personalizer.create("alice", PASS, kdf=kdf)
        p.add_items(HistoryItem(text=t, kind="rating", score=s, label="shop") for t, s in REVIEWS)
        p.configure_profile(
            summary_backend=_llama_base_session,
            embedder=embedder,
            summary_settings=SummarySettings(max_tokens=16),  # short summaries: fast tests
        )
        yield p
        p.close()


def _equal(x: LoraAdapter, y: LoraAdapter) -> bool:
    return all(
        torch.equal(x.a[n], y.a[n]) and torch.equal(x.b[n], y.b[n]) for n in x.targets.module_names
    )


@pytest.mark.real_model
def test_without_a_hypernetwork_chat_uses_the_base_model(alice, no_hypernet_registry) -> None:
    from p2p_local.errors import CheckpointError

    alice.configure_adapter(checkpoint=None)
    assert alice.hypernetwork_info() is None
    with pytest.raises(CheckpointError, match="no trained hypernetwork is installed"):
        alice.build_adapter()
    assert alice.personal_adapter("llamacpp") is None


@pytest.mark.real_model
def test_per_user_adapter_is_cached_and_follows_the_history(alice, random_hypernet_dir) -> None:
    from p2p_local.adapter import USER_ADAPTER_BLOB
    from p2p_local.store.records import HistoryItem

    alice.configure_adapter(checkpoint=random_hypernet_dir)
    first = alice.build_adapter()
    assert not first.cached and not first.per_query and first.generate_seconds > 0
    assert first.adapter.checkpoint_id == alice.hypernetwork_info().checkpoint_id
    assert torch.count_nonzero(first.adapter.b["q_proj"]) > 0
    assert alice.vault.get_blob(USER_ADAPTER_BLOB) is not None  # kept in the encrypted vault
    again = alice.build_adapter()
    assert again.cached and again.key == first.key and _equal(again.adapter, first.adapter)

    per_query = alice.build_adapter("which coffee grinder should I buy?")
    assert per_query.per_query and not per_query.cached
    assert not _equal(per_query.adapter, first.adapter)

    alice.add_items(
        [
            HistoryItem(
                text="The kettle boils fast and is quiet.", kind="rating", score=5.0, label="shop"
            )
        ]
    )
    changed = alice.build_adapter()
    assert not changed.cached and changed.key != first.key
    assert not _equal(changed.adapter, first.adapter)


@pytest.mark.real_model
def test_threads_asking_at_once_build_the_adapter_once(
    alice, random_hypernet_dir, monkeypatch
) -> None:
    import threading

    from p2p_local.store.records import HistoryItem

    alice.configure_adapter(checkpoint=random_hypernet_dir)
    alice.add_items([HistoryItem(text="A new grinder, loud but even.", kind="rating", score=3.0,
                                 label="shop")])  # a history the adapter was never built for
    builds: list[int] = []
    real = type(alice).build_adapter

    def counting(self, *args, **kwargs):
        builds.append(1)
        return real(self, *args, **kwargs)

    monkeypatch.setattr(type(alice), "build_adapter", counting)
    start = threading.Barrier(4)
    got: list[object] = []

    def ask() -> None:
        start.wait()
        got.append(alice.personal_adapter("llamacpp"))

    threads = [threading.Thread(target=ask) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(got) == 4 and got[0] is not None
    assert all(g is got[0] for g in got)  # one payload, shared
    assert len(builds) == 1


@pytest.mark.real_model
def test_profiles_follow_the_checkpoints_recorded_settings(alice, random_hypernet_dir,
                                                           tmp_path) -> None:
    from p2p_local.hypernet.checkpoint import load_checkpoint, save_checkpoint
    from p2p_local.profile.builder import ProfileSettings

    alice.configure_adapter(checkpoint=random_hypernet_dir)  # records no settings: defaults
    assert "## User History:" not in alice.profile().body  # summary + statistics only
    ck = load_checkpoint(random_hypernet_dir)
    save_checkpoint(ck.hypernet, tmp_path / "recent", base_model=ck.info.base_model,
                    embedding_model=ck.info.embedding_model, profile=ProfileSettings(recent=2))
    alice.configure_adapter(checkpoint=tmp_path / "recent")
    body = alice.profile().body
    assert body.index("## User History Statistics:") < body.index("## User History:\n- ")
    assert body.count("\n- ") == 2
    built = alice.build_adapter()
    assert built.adapter.checkpoint_id == alice.hypernetwork_info().checkpoint_id
    alice.configure_adapter(checkpoint=random_hypernet_dir)
    assert "## User History:" not in alice.profile().body


@pytest.mark.real_model
def test_checkpoint_for_another_base_refused(alice, random_hypernet_dir, tmp_path) -> None:
    from p2p_local.errors import CheckpointError
    from p2p_local.hypernet.checkpoint import load_checkpoint, save_checkpoint

    ck = load_checkpoint(random_hypernet_dir)
    save_checkpoint(
        ck.hypernet,
        tmp_path / "other",
        base_model="qwen2-0.5b@000000000000",
        embedding_model=ck.info.embedding_model,
    )
    alice.configure_adapter(checkpoint=tmp_path / "other")
    with pytest.raises(CheckpointError, match="trained for base model"):
        alice.build_adapter()


@pytest.mark.real_model
def test_chat_payloads_for_both_backends(alice, random_hypernet_dir, hf_base) -> None:
    from p2p_local.api import _adapter_payload
    from p2p_local.hypernet.inject import inject_lora
    from p2p_local.runtime import apply_adapter

    alice.configure_adapter(checkpoint=random_hypernet_dir)
    payload = alice.personal_adapter("llamacpp")
    assert payload is not None and payload.gguf_bytes.startswith(b"GGUF")
    assert alice.personal_adapter("llamacpp") is payload  # cached between replies

    adapter = alice.adapter()
    hf_payload = _adapter_payload(adapter, "hf", "k")
    apply_adapter(hf_base, hf_payload)
    tokens = hf_base.prompt_tokens([{"role": "user", "content": "Recommend a pan."}])
    got = hf_base.eval_logits(tokens)
    hf_base.set_adapter(None)
    with (
        torch.inference_mode(),
        inject_lora(hf_base.base_model, adapter.targets, adapter.weights()),
    ):
        want = hf_base.base_model(torch.tensor([tokens])).logits[0].numpy()
    assert np.abs(got - want).max() <= 1e-5


@pytest.mark.real_model
def test_chat_applies_the_adapter(alice, random_hypernet_dir) -> None:
    from p2p_local.runtime.base import GenerationSettings

    alice.configure_adapter(checkpoint=random_hypernet_dir)
    reply = alice.chat([{"role": "user", "content": "Hi"}], GenerationSettings(max_tokens=4))
    assert isinstance(reply, str)
    backend = alice.chat_backend("llamacpp")
    assert backend.has_adapter and backend.adapter_source.startswith("payload:")
    alice.chat(
        [{"role": "user", "content": "Hi"}], GenerationSettings(max_tokens=2), use_adapter=False
    )
    assert not backend.has_adapter


@pytest.mark.real_model
def test_export_encrypted_by_default(alice, random_hypernet_dir, tmp_path) -> None:
    from p2p_local.export import import_adapter

    alice.configure_adapter(checkpoint=random_hypernet_dir)
    res = alice.export("peft", tmp_path / "me.p2pseal")
    assert res.encrypted and res.path.read_bytes().startswith(b"P2PSEAL")
    assert _equal(import_adapter(res.path, passphrase=PASS), alice.adapter())
    res = alice.export("gguf", tmp_path / "me.gguf", plaintext=True)
    assert res.path.read_bytes().startswith(b"GGUF")


def test_scaled_multiplies_every_update_and_leaves_the_original() -> None:
    ad = generate(net(), torch.randn(16))
    before = ad.b["q_proj"].clone()
    half = ad.scaled(0.5)
    for name, layer in (("q_proj", 0), ("v_proj", 2)):
        torch.testing.assert_close(half.delta(name, layer), 0.5 * ad.delta(name, layer))
    assert torch.equal(ad.b["q_proj"], before) and half.scale == ad.scale
    assert ad.scaled(1.0) is ad
    for bad in (0, -1.0, True, "2"):
        with pytest.raises(ConfigError, match="adapter scale must be a positive number"):
            ad.scaled(bad)  # type: ignore[arg-type]
