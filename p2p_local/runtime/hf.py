"""The transformers backend: a base model in PyTorch with PEFT LoRA adapters.

Owns :class:`HFBackend`: loads the base from a GGUF file (``gguf_file=``, dequantized to fp32)
or from a transformers model folder, chats with the tokenizer's own chat template (greedy or
sampled, streamed through ``TextIteratorStreamer``), scores prompts (all-position logits) and
applies PEFT LoRA adapters from a folder or from tensors in memory. CUDA is used when present.

Loading a GGUF goes through transformers' GGUF reader once (~20 s on 2 cores: most of it is
metadata parsing); the dequantized result is saved as a plain transformers folder in the cache
(keyed by the GGUF's sha256) and later loads take about a second. It does not build adapters.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import shutil
import threading
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch

from p2p_local.errors import AdapterError, InputError, ModelFormatError
from p2p_local.paths import cache_dir
from p2p_local.registry import cached_sha256, check_gguf_model
from p2p_local.runtime.base import GenerationSettings, Message, check_messages

_DONE = "p2p-converted.json"


def converted_dir(gguf_path: Path) -> Path:
    """The cached transformers folder for ``gguf_path`` (may not exist yet)."""
    gguf_path = Path(gguf_path)
    digest = cached_sha256(gguf_path)
    return cache_dir() / "models" / "derived" / f"{gguf_path.stem}-{digest[:12]}-hf"


def convert_gguf(gguf_path: Path, dest: Path | None = None) -> Path:
    """Dequantize a GGUF into a transformers folder (fp32 safetensors + tokenizer); return it."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    gguf_path = Path(gguf_path)
    check_gguf_model(gguf_path)
    dest = dest or converted_dir(gguf_path)
    if (dest / _DONE).is_file():
        return dest
    tmp = dest.with_name(f".{dest.name}.{os.getpid()}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        kw = {"gguf_file": gguf_path.name}
        with _quiet_loading():
            tokenizer = AutoTokenizer.from_pretrained(gguf_path.parent, **kw)
            model = AutoModelForCausalLM.from_pretrained(gguf_path.parent, dtype=torch.float32,
                                                         **kw)
    except Exception as exc:  # transformers raises many kinds for unsupported / corrupt files
        raise ModelFormatError(
            f"transformers cannot load {gguf_path} ({type(exc).__name__}: {exc}): use a GGUF of "
            "an architecture transformers supports, or a transformers model folder"
        ) from exc
    # The weights are plain fp32 now: drop the GGUF "quantizer" so the model can be saved.
    model.hf_quantizer = None  # type: ignore[assignment]
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    model.save_pretrained(tmp)
    tokenizer.save_pretrained(tmp)
    (tmp / _DONE).write_text(json.dumps({"source": gguf_path.name}), encoding="utf-8")
    shutil.rmtree(dest, ignore_errors=True)
    os.replace(tmp, dest)
    return dest


@contextlib.contextmanager
def _quiet_loading() -> Iterator[None]:
    """No per-tensor progress bars from transformers while a model loads."""
    from transformers.utils import logging as hf_logging

    was_on = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        if was_on:
            hf_logging.enable_progress_bar()


def default_device() -> str:
    return "cuda" if torch.cuda.is_available() else "cpu"


class HFBackend:
    """A transformers causal LM with at most one PEFT LoRA adapter applied.

    model_path: a GGUF file (dequantized) or a transformers model folder.
    device:     "cpu", "cuda", ... (default: CUDA when available).
    dtype:      parameter dtype (default float32).
    convert_cache: keep a dequantized copy of a GGUF in the cache for fast later loads.
    """

    name = "hf"

    def __init__(self, model_path: Path, *, device: str | None = None,
                 dtype: torch.dtype | None = None, convert_cache: bool = True) -> None:
        from transformers import AutoModelForCausalLM, AutoTokenizer

        self.model_path = Path(model_path)
        self.device = torch.device(device or default_device())
        self.dtype = dtype or torch.float32
        if not self.model_path.exists():
            raise ModelFormatError(f"model {self.model_path} does not exist: check the path")
        if self.model_path.is_file():
            if convert_cache:
                folder, kw = convert_gguf(self.model_path), {}
            else:
                check_gguf_model(self.model_path)
                folder, kw = self.model_path.parent, {"gguf_file": self.model_path.name}
        else:
            if not (self.model_path / "config.json").is_file():
                raise ModelFormatError(
                    f"{self.model_path} is not a transformers model folder (no config.json)"
                )
            folder, kw = self.model_path, {}
        try:
            with _quiet_loading():
                self.tokenizer = AutoTokenizer.from_pretrained(folder, **kw)
                base: Any = AutoModelForCausalLM.from_pretrained(folder, dtype=self.dtype, **kw)
        except Exception as exc:
            raise ModelFormatError(
                f"transformers cannot load {self.model_path} ({type(exc).__name__}: {exc})"
            ) from exc
        if not self.tokenizer.chat_template:
            raise ModelFormatError(f"{self.model_path} has no chat template: use an instruct model")
        self._base = base.to(self.device).eval()
        self._peft: Any = None  # PeftModel wrapping _base, when an adapter is applied
        self._peft_config: dict[str, Any] | None = None
        self.adapter_source: str | None = None
        self._lock = threading.RLock()
        self.arch = str(getattr(base.config, "model_type", ""))

    # -- ChatBackend ------------------------------------------------------------------------

    @property
    def model(self) -> Any:
        """The model used for generation: the PEFT-wrapped one while an adapter is applied."""
        return self._peft if self._peft is not None else self._base

    @property
    def base_model(self) -> Any:
        return self._base

    @property
    def has_adapter(self) -> bool:
        return self._peft is not None

    def n_ctx(self) -> int:
        return int(getattr(self._base.config, "max_position_embeddings", 2048))

    def count_tokens(self, text: str) -> int:
        return len(self.tokenize(text))

    def tokenize(self, text: str, *, add_bos: bool = False, special: bool = False) -> list[int]:
        ids = self.tokenizer(text, add_special_tokens=False, split_special_tokens=not special)
        out = list(ids["input_ids"])
        bos = self.tokenizer.bos_token_id
        if add_bos and bos is not None and (not out or out[0] != bos):
            out.insert(0, bos)
        return out

    def apply_chat_template(self, messages: list[Message]) -> str:
        check_messages(messages)
        conversation: Any = [dict(m) for m in messages]
        return str(self.tokenizer.apply_chat_template(
            conversation, tokenize=False, add_generation_prompt=True))

    def prompt_tokens(self, messages: list[Message]) -> list[int]:
        return self.tokenize(self.apply_chat_template(messages), special=True)

    def chat(self, messages: list[Message], settings: GenerationSettings) -> str:
        ids = self._prompt_tensor(messages)
        with self._lock, torch.inference_mode():
            out = self.model.generate(input_ids=ids, attention_mask=torch.ones_like(ids),
                                      **self._gen_kwargs(settings))
        return str(self.tokenizer.decode(out[0, ids.shape[1]:], skip_special_tokens=True))

    def stream(self, messages: list[Message], settings: GenerationSettings) -> Iterator[str]:
        ids = self._prompt_tensor(messages)
        return self._stream(ids, settings)

    def _stream(self, ids: torch.Tensor, settings: GenerationSettings) -> Iterator[str]:
        from transformers import StoppingCriteria, StoppingCriteriaList, TextIteratorStreamer

        streamer = TextIteratorStreamer(self.tokenizer, skip_prompt=True,
                                        skip_special_tokens=True)
        failure: list[BaseException] = []
        stop = threading.Event()

        class StopWhenAsked(StoppingCriteria):  # the consumer went away: stop generating
            def __call__(self, input_ids: torch.Tensor, scores: Any, **kw: Any) -> Any:
                return torch.full((input_ids.shape[0],), stop.is_set(), dtype=torch.bool)

        kwargs = self._gen_kwargs(settings)

        def run() -> None:
            try:
                with torch.inference_mode():
                    self.model.generate(input_ids=ids, attention_mask=torch.ones_like(ids),
                                        streamer=streamer, **kwargs,
                                        stopping_criteria=StoppingCriteriaList([StopWhenAsked()]))
            except BaseException as exc:  # re-raised in the consuming thread
                failure.append(exc)
                streamer.end()

        with self._lock:
            worker = threading.Thread(target=run, daemon=True)
            worker.start()
            try:
                for piece in streamer:
                    if piece:
                        yield piece
            finally:
                stop.set()
                worker.join()
        if failure:
            raise failure[0]

    def generate_tokens(self, prompt: list[int], max_tokens: int) -> list[int]:
        """Greedy continuation of ``prompt`` as token ids (stops at end-of-sequence)."""
        ids = torch.tensor([prompt], device=self.device)
        settings = GenerationSettings(max_tokens=max_tokens, temperature=0.0)
        with self._lock, torch.inference_mode():
            out = self.model.generate(input_ids=ids, attention_mask=torch.ones_like(ids),
                                      **self._gen_kwargs(settings))
        new = out[0, ids.shape[1]:].tolist()
        eos = _eos_ids(self)
        for i, tok in enumerate(new):
            if tok in eos:
                return new[:i]
        return new

    def eval_logits(self, prompt_tokens: list[int]) -> np.ndarray:
        """Logits at every position of ``prompt_tokens``: float32 array [n, vocab]."""
        if not prompt_tokens:
            raise InputError("eval_logits needs at least one token")
        ids = torch.tensor([prompt_tokens], device=self.device)
        with self._lock, torch.inference_mode():
            logits = self.model(input_ids=ids).logits[0]
        return logits.float().cpu().numpy()

    def reset(self) -> None:
        """Nothing is cached between calls; kept so both backends offer the same methods."""

    def _prompt_tensor(self, messages: list[Message]) -> torch.Tensor:
        tokens = self.prompt_tokens(messages)
        if len(tokens) >= self.n_ctx():
            raise InputError(
                f"the conversation is {len(tokens)} tokens, longer than the context window "
                f"({self.n_ctx()}): start a new conversation or shorten it"
            )
        return torch.tensor([tokens], device=self.device)

    def _gen_kwargs(self, settings: GenerationSettings) -> dict[str, Any]:
        eos = sorted(_eos_ids(self))
        kw: dict[str, Any] = {
            "max_new_tokens": settings.max_tokens,
            "eos_token_id": eos,
            "pad_token_id": self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None
            else eos[0],
        }
        if settings.temperature == 0.0:
            kw.update(do_sample=False, temperature=None, top_p=None, top_k=None)
        else:
            torch.manual_seed(settings.seed)
            kw.update(do_sample=True, temperature=settings.temperature, top_p=settings.top_p,
                      top_k=0)
        if settings.repeat_penalty != 1.0:
            kw["repetition_penalty"] = settings.repeat_penalty
        return kw

    # -- adapters ---------------------------------------------------------------------------

    def set_adapter(self, peft_dir: Path | None) -> None:
        """Apply the PEFT adapter saved in ``peft_dir`` (None removes the adapter)."""
        from peft import PeftModel

        with self._lock:
            if peft_dir is None:
                self._unload()
                return
            peft_dir = Path(peft_dir)
            if not (peft_dir / "adapter_config.json").is_file():
                raise AdapterError(
                    f"{peft_dir} is not a PEFT adapter folder (no adapter_config.json)"
                )
            self._unload()
            try:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore", FutureWarning)
                    self._peft = PeftModel.from_pretrained(self._base, peft_dir).eval()
            except Exception as exc:  # PEFT raises ValueError/RuntimeError/KeyError
                self._unload()
                raise AdapterError(
                    f"cannot apply adapter {peft_dir} to {self.model_path.name} "
                    f"({type(exc).__name__}: {_first_line(exc)}): it was made for another model"
                ) from exc
            self._peft_config = None
            self.adapter_source = str(peft_dir)

    def set_adapter_weights(self, peft_config: dict[str, Any],
                            state_dict: dict[str, torch.Tensor]) -> None:
        """Apply a LoRA given as a PEFT config dict and PEFT-named tensors, without files."""
        from peft import LoraConfig, get_peft_model, set_peft_model_state_dict

        names = {f.name for f in dataclasses.fields(LoraConfig)}
        cfg = {k: v for k, v in peft_config.items() if k in names}
        cfg["inference_mode"] = True
        with self._lock:
            same = self._peft is not None and self._peft_config == cfg
            if same and self._copy_in_place(state_dict):
                self.adapter_source = "<memory>"
                return
            if not same:
                self._unload()
                try:
                    with warnings.catch_warnings():  # PEFT calls a deprecated transformers API
                        warnings.simplefilter("ignore", FutureWarning)
                        warnings.filterwarnings("ignore", message=".*base_model_name_or_path")
                        self._peft = get_peft_model(self._base, LoraConfig(**cfg)).eval()
                except Exception as exc:
                    self._unload()
                    raise AdapterError(
                        f"cannot build the adapter on {self.model_path.name} "
                        f"({type(exc).__name__}: {_first_line(exc)})"
                    ) from exc
            try:
                result: Any = set_peft_model_state_dict(self._peft, state_dict)
            except Exception as exc:
                self._unload()
                raise AdapterError(
                    f"adapter tensors do not fit {self.model_path.name} "
                    f"({type(exc).__name__}: {_first_line(exc)})"
                ) from exc
            missing = [k for k in result.missing_keys if "lora_" in k]
            if result.unexpected_keys or missing:
                self._unload()
                bad = (list(result.unexpected_keys) + missing)[:3]
                raise AdapterError(
                    f"adapter tensors do not match its config or the model (e.g. {bad}): "
                    "export it again for this base model"
                )
            self._peft_config = cfg
            self.adapter_source = "<memory>"

    def _copy_in_place(self, state_dict: dict[str, torch.Tensor]) -> bool:
        """Copy new LoRA tensors into the injected ones (same config); False if they differ."""
        params = dict(self._peft.named_parameters())
        targets = []
        for key, value in state_dict.items():
            stem, dot, leaf = key.rpartition(".")
            param = params.get(f"{stem}.default{dot}{leaf}")
            if param is None or param.shape != value.shape:
                return False
            targets.append((param, value))
        if len(targets) != sum(1 for n in params if ".lora_" in n):
            return False
        with torch.no_grad():
            for param, value in targets:
                param.copy_(value)
        return True

    def _unload(self) -> None:
        if self._peft is not None:
            self._base = self._peft.unload().eval()
            with contextlib.suppress(AttributeError):
                del self._base.peft_config
        self._peft = None
        self._peft_config = None
        self.adapter_source = None

    def close(self) -> None:
        """Drop the model (memory is returned once no other reference holds it)."""
        self._peft = None
        self._base = None


def _eos_ids(backend: HFBackend) -> set[int]:
    ids: set[int] = set()
    gen = getattr(backend._base, "generation_config", None)
    for value in (getattr(gen, "eos_token_id", None), backend.tokenizer.eos_token_id):
        if isinstance(value, int):
            ids.add(value)
        elif isinstance(value, (list, tuple)):
            ids.update(int(v) for v in value)
    return ids


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0][:200] if text else ""
