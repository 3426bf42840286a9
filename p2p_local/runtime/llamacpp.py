"""The llama.cpp backend: chat with a GGUF base model and hot-swap GGUF LoRA adapters.

Owns :class:`LlamaCppBackend` (llama-cpp-python): chat and streaming with the GGUF's own chat
template, all-position logits for parity checks, and adapters swapped on the loaded model
without reloading it (``llama_adapter_lora_init`` + ``llama_set_adapters_lora`` on the
low-level handles). After every swap the context (KV cache) is cleared: a cached prefix computed
with the old adapter would otherwise silently produce wrong output. Adapters that are dropped
are freed. Adapter bytes (decrypted in memory) never need a file: llama.cpp reads them from a
``FILE*`` over the process's own memory (``fmemopen`` + ``llama_adapter_lora_init_from_file_ptr``);
where that is missing, from an anonymous memory file (``memfd_create``, opened as
``/proc/self/fd/N``); only where both are missing from a 0600 temporary file deleted right after
loading (:func:`adapter_transport` says which). It does not build or export adapters.

llama.cpp runs its threads with OpenMP. Busy-waiting OpenMP threads make prompt processing
5-20x slower when other processes share the CPU (measured on 2 cores), so ``OMP_WAIT_POLICY``
defaults to ``PASSIVE`` here; it must be set before llama.cpp is first loaded in the process,
and an explicit setting in the environment wins.
"""

from __future__ import annotations

import contextlib
import ctypes
import functools
import os
import tempfile
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import numpy as np

from p2p_local.errors import (
    AdapterError,
    BackendUnavailableError,
    InputError,
    ModelFormatError,
)
from p2p_local.registry import check_gguf_model, gguf_header_from_bytes, read_gguf_header
from p2p_local.runtime.base import GenerationSettings, Message, check_messages

GGML_TYPE_F32 = 0
TRANSPORTS = ("fmemopen", "memfd", "tempfile")

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # read when llama.cpp's OpenMP loads


@dataclass(frozen=True)
class LoraFileInfo:
    """What a GGUF LoRA adapter file says about itself."""

    arch: str
    alpha: float | None
    n_tensors: int


def read_lora_info(source: Path | bytes) -> LoraFileInfo:
    """Check that ``source`` (a path or the file's bytes) is a GGUF LoRA adapter.

    Raises :class:`AdapterError` if it is not, or if it is truncated.
    """
    path = "<memory>" if isinstance(source, bytes) else str(source)
    try:
        if isinstance(source, bytes):
            header, size = gguf_header_from_bytes(source), len(source)
        else:
            header, size = read_gguf_header(Path(source)), Path(source).stat().st_size
    except ModelFormatError as exc:
        raise AdapterError(f"not a usable adapter: {exc}") from exc
    except OSError as exc:
        raise AdapterError(f"cannot read adapter {path}: {exc.strerror}") from exc
    kv = header.kv
    if kv.get("general.type") != "adapter" or kv.get("adapter.type") != "lora":
        raise AdapterError(
            f"{path} is not a LoRA adapter (general.type={kv.get('general.type')!r}, "
            f"adapter.type={kv.get('adapter.type')!r}): export one with 'p2p-local adapter export'"
        )
    arch = kv.get("general.architecture")
    if not arch:
        raise AdapterError(f"adapter {path} has no general.architecture")
    if size < header.data_end:
        raise AdapterError(f"adapter {path} is truncated: export it again")
    alpha = kv.get("adapter.lora.alpha")
    return LoraFileInfo(arch=str(arch), n_tensors=header.n_tensors,
                        alpha=float(alpha) if isinstance(alpha, (int, float)) else None)


class LlamaCppBackend:
    """A GGUF base model in llama.cpp, with at most one LoRA adapter applied.

    model_path:    the base model GGUF.
    n_ctx:         context window in tokens.
    f32_kv_cache:  keep the KV cache in F32 (exact parity with transformers on an F32 base).
    seed:          default sampling seed.
    n_threads:     CPU threads (default: half the logical cores, at least 1: llama.cpp's
                   threads spin while they wait, so oversubscribing the CPU costs a lot).
    n_gpu_layers:  layers offloaded to a GPU when llama.cpp was built with one (-1: all).
    Not thread-safe for concurrent generation from several threads: calls are serialized.
    """

    name = "llamacpp"

    def __init__(self, model_path: Path, *, n_ctx: int = 2048, f32_kv_cache: bool = False,
                 seed: int = 0, n_threads: int | None = None, n_gpu_layers: int = -1) -> None:
        try:
            import llama_cpp
        except ImportError as exc:  # pragma: no cover - a dependency of the package
            raise BackendUnavailableError(
                "llama-cpp-python is not installed: pip install llama-cpp-python"
            ) from exc
        if n_ctx < 16:
            raise InputError(f"n_ctx must be at least 16, got {n_ctx}")
        self._lock = threading.RLock()
        self._closed = False
        self._adapter: Any = None  # llama_adapter_lora_p currently applied
        self.adapter_scale = 1.0
        self.adapter_source: str | None = None
        self.model_path = Path(model_path)
        check_gguf_model(self.model_path)
        self._lib = llama_cpp
        kwargs: dict[str, Any] = {}
        if f32_kv_cache:
            kwargs.update(type_k=GGML_TYPE_F32, type_v=GGML_TYPE_F32)
        try:
            self._llm = llama_cpp.Llama(
                model_path=str(self.model_path), n_ctx=n_ctx, seed=seed, verbose=False,
                n_threads=n_threads or default_threads(), n_gpu_layers=n_gpu_layers, **kwargs,
            )
        except (ValueError, RuntimeError) as exc:
            raise ModelFormatError(
                f"llama.cpp cannot load {self.model_path} ({exc}): check that it is a complete "
                "GGUF model of an architecture this llama.cpp supports"
            ) from exc
        self.seed = seed
        self.f32_kv_cache = f32_kv_cache
        meta = self._llm.metadata
        self.arch = meta.get("general.architecture", "")
        template = meta.get("tokenizer.chat_template")
        if not template:
            self.close()
            raise ModelFormatError(
                f"{self.model_path} has no chat template (tokenizer.chat_template): "
                "use an instruction-tuned model"
            )
        from llama_cpp.llama_chat_format import Jinja2ChatFormatter

        def token_text(token: int) -> str:
            return self._llm.detokenize([token], special=True).decode("utf-8", "replace")

        self._formatter = Jinja2ChatFormatter(
            template=template, eos_token=token_text(self._llm.token_eos()),
            bos_token=token_text(self._llm.token_bos()), add_generation_prompt=True,
        )

    # -- ChatBackend ------------------------------------------------------------------------

    @property
    def llm(self) -> Any:
        """The underlying ``llama_cpp.Llama`` (for code that needs more than this class offers)."""
        return self._llm

    def n_ctx(self) -> int:
        self._check_open()
        # llama.cpp may pad the context (to 256), but llama-cpp-python's buffers keep the size
        # that was asked for: the smaller one is the real limit.
        return min(int(self._llm.n_ctx()), len(self._llm.input_ids))

    def count_tokens(self, text: str) -> int:
        return len(self.tokenize(text, add_bos=False))

    def tokenize(self, text: str, *, add_bos: bool = False, special: bool = False) -> list[int]:
        self._check_open()
        return list(self._llm.tokenize(text.encode("utf-8"), add_bos=add_bos, special=special))

    def detokenize(self, tokens: list[int]) -> str:
        self._check_open()
        return self._llm.detokenize(tokens).decode("utf-8", errors="replace")

    def apply_chat_template(self, messages: list[Message]) -> str:
        """The prompt text for ``messages``, ending with the assistant's turn opening."""
        check_messages(messages)
        conversation: Any = [dict(m) for m in messages]
        result = self._formatter(messages=conversation)
        return result.prompt

    def prompt_tokens(self, messages: list[Message]) -> list[int]:
        """Token ids of the chat prompt (special tokens parsed, as the template means them)."""
        return self.tokenize(self.apply_chat_template(messages), add_bos=False, special=True)

    def chat(self, messages: list[Message], settings: GenerationSettings) -> str:
        return "".join(self.stream(messages, settings))

    def stream(self, messages: list[Message], settings: GenerationSettings) -> Iterator[str]:
        tokens = self.prompt_tokens(messages)
        if len(tokens) >= self.n_ctx():
            raise InputError(
                f"the conversation is {len(tokens)} tokens, longer than the context window "
                f"({self.n_ctx()}): start a new conversation (/reset) or shorten it"
            )
        return self._stream_tokens(tokens, settings)

    def _stream_tokens(self, tokens: list[int], settings: GenerationSettings) -> Iterator[str]:
        with self._lock:
            self._check_open()
            max_tokens = min(settings.max_tokens, self.n_ctx() - len(tokens))
            chunks = self._llm.create_completion(
                prompt=tokens, max_tokens=max_tokens, temperature=settings.temperature,
                top_p=settings.top_p, seed=settings.seed, repeat_penalty=settings.repeat_penalty,
                stream=True,
            )
            for chunk in cast(Iterator[Any], chunks):  # stream=True: an iterator of chunks
                text = chunk["choices"][0]["text"]
                if text:
                    yield text

    def generate_tokens(self, prompt: list[int], max_tokens: int) -> list[int]:
        """Greedy continuation of ``prompt`` as token ids (stops at end-of-generation)."""
        with self._lock:
            self._check_open()
            self._llm.reset()
            out: list[int] = []
            for tok in self._llm.generate(prompt, temp=0.0, reset=True):
                if self._lib.llama_vocab_is_eog(self._llm._model.vocab, tok):
                    break
                out.append(int(tok))
                if len(out) >= max_tokens:
                    break
            self._llm.reset()
            return out

    def eval_logits(self, prompt_tokens: list[int]) -> np.ndarray:
        """Logits at every position of ``prompt_tokens``: float32 array [n, vocab]."""
        if not prompt_tokens:
            raise InputError("eval_logits needs at least one token")
        if len(prompt_tokens) > self.n_ctx():
            raise InputError(f"{len(prompt_tokens)} tokens do not fit n_ctx={self.n_ctx()}")
        with self._lock:
            self._check_open()
            llm = self._llm
            vocab = llm.n_vocab()
            out = np.empty((len(prompt_tokens), vocab), dtype=np.float32)
            self._clear_context()
            for start in range(0, len(prompt_tokens), llm.n_batch):
                chunk = prompt_tokens[start:start + llm.n_batch]
                llm._batch.set_batch(batch=chunk, n_past=start, logits_all=True)
                llm._ctx.decode(llm._batch)
                ptr = llm._ctx.get_logits()
                out[start:start + len(chunk)] = np.ctypeslib.as_array(
                    ptr, shape=(len(chunk) * vocab,)).reshape(len(chunk), vocab)
            self._clear_context()
            return out

    # -- adapters ---------------------------------------------------------------------------

    def set_adapter(self, path: Path | None, scale: float = 1.0) -> None:
        """Apply the GGUF LoRA adapter at ``path`` (None removes it) without reloading the base."""
        if path is None:
            self._swap(None, scale, None)
            return
        path = Path(path)
        if not path.is_file():
            raise AdapterError(f"adapter file {path} does not exist: check the path")
        self._check_lora(path)
        self._swap(self._load_lora(str(path), shown=str(path)), scale, str(path))

    def set_adapter_bytes(self, data: bytes | None, scale: float = 1.0, *,
                          transport: str | None = None) -> None:
        """Apply a GGUF LoRA adapter held in memory (its bytes never reach the disk on Linux or
        macOS). ``transport``: fmemopen | memfd | tempfile (default: :func:`adapter_transport`).
        """
        if data is None:
            self._swap(None, scale, None)
            return
        if not data.startswith(b"GGUF"):
            raise AdapterError("adapter bytes are not a GGUF file: export it as GGUF first")
        how = transport or adapter_transport()
        if how not in TRANSPORTS:
            raise InputError(f"transport must be one of {', '.join(TRANSPORTS)}, got {how!r}")
        self._check_lora(data)
        if how == "fmemopen":
            handle = self._load_lora_fmemopen(data)
        else:
            with _adapter_file(data, memfd=how == "memfd") as fname:
                handle = self._load_lora(fname, shown="in-memory adapter")
        self._swap(handle, scale, "<memory>")

    @property
    def has_adapter(self) -> bool:
        return self._adapter is not None

    def _check_lora(self, source: Path | bytes) -> None:
        info = read_lora_info(source)
        if info.arch != self.arch:
            raise AdapterError(
                f"adapter is for architecture {info.arch!r} but the base model is {self.arch!r}: "
                "generate the adapter for this base model"
            )

    def _load_lora(self, fname: str, *, shown: str) -> Any:
        with self._lock:
            self._check_open()
            handle = self._lib.llama_adapter_lora_init(self._llm._model.model, fname.encode())
        if not handle:
            raise AdapterError(
                f"llama.cpp rejected {shown}: its tensors do not match the base model "
                f"{self.model_path.name} (wrong layer count or shapes?)"
            )
        return handle

    def _load_lora_fmemopen(self, data: bytes) -> Any:
        libc = _libc_fmemopen()
        if libc is None:
            raise InputError("fmemopen is not available here: use transport='memfd'")
        buf = ctypes.create_string_buffer(data, len(data))  # alive until fclose below
        with self._lock:
            self._check_open()
            fp = libc.fmemopen(buf, len(data), b"rb")
            if not fp:
                raise AdapterError("fmemopen failed: use transport='memfd'")
            try:
                handle = self._lib.llama_adapter_lora_init_from_file_ptr(
                    self._llm._model.model, fp)
            finally:
                libc.fclose(fp)  # the caller owns the FILE*: llama.cpp does not close it
        if not handle:
            raise AdapterError(
                f"llama.cpp rejected the in-memory adapter: its tensors do not match the base "
                f"model {self.model_path.name} (wrong layer count or shapes?)"
            )
        return handle

    def _swap(self, handle: Any, scale: float, source: str | None) -> None:
        with self._lock:
            self._check_open()
            ctx = self._llm._ctx.ctx
            if handle is None:
                rc = self._lib.llama_set_adapters_lora(ctx, None, 0, None)
            else:
                adapters = (self._lib.llama_adapter_lora_p_ctypes * 1)(handle)
                scales = (ctypes.c_float * 1)(scale)
                rc = self._lib.llama_set_adapters_lora(ctx, adapters, 1, scales)
            if rc != 0:
                if handle is not None:
                    self._lib.llama_adapter_lora_free(handle)
                raise AdapterError(f"llama.cpp could not apply the adapter (code {rc})")
            old, self._adapter = self._adapter, handle
            if old is not None and old is not handle:
                self._lib.llama_adapter_lora_free(old)
            self.adapter_scale = scale
            self.adapter_source = source
            self._clear_context()  # a KV prefix from the old adapter would be silently wrong

    def _clear_context(self) -> None:
        self._llm.reset()
        mem = self._lib.llama_get_memory(self._llm._ctx.ctx)
        if mem is not None:
            self._lib.llama_memory_clear(mem, False)

    # -- lifetime ---------------------------------------------------------------------------

    def reset(self) -> None:
        """Forget the cached conversation prefix (the next call evaluates its prompt afresh)."""
        with self._lock:
            self._check_open()
            self._clear_context()

    def close(self) -> None:
        """Free the adapter, then the model (llama.cpp frees adapters with their model)."""
        with self._lock:
            if self._closed or not hasattr(self, "_llm"):
                self._closed = True
                return
            self._closed = True
            if self._adapter is not None:
                self._lib.llama_set_adapters_lora(self._llm._ctx.ctx, None, 0, None)
                self._lib.llama_adapter_lora_free(self._adapter)
                self._adapter = None
            self._llm.close()

    def _check_open(self) -> None:
        if self._closed:
            raise InputError("this backend was closed: create a new one")

    def __enter__(self) -> LlamaCppBackend:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __del__(self) -> None:
        with contextlib.suppress(Exception):
            self.close()


@contextlib.contextmanager
def _adapter_file(data: bytes, *, memfd: bool = True) -> Iterator[str]:
    """A path that reads as ``data``: an anonymous memory file, else a 0600 temp file."""
    if memfd and _has_memfd():
        fd = os.memfd_create("p2p-adapter")
        try:
            _write_all(fd, data)
            os.lseek(fd, 0, os.SEEK_SET)
            yield f"/proc/self/fd/{fd}"
        finally:
            os.close(fd)
        return
    fd, name = tempfile.mkstemp(prefix="p2p-adapter-", suffix=".gguf")  # created 0600
    try:
        _write_all(fd, data)
        os.close(fd)
        fd = -1
        yield name
    finally:
        if fd >= 0:
            os.close(fd)
        with contextlib.suppress(OSError):
            os.unlink(name)


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        n = os.write(fd, view)
        view = view[n:]


def default_threads() -> int:
    return max(1, (os.cpu_count() or 2) // 2)


@contextlib.contextmanager
def decode_calls(backend: LlamaCppBackend) -> Iterator[list[int]]:
    """Within the block, the number of tokens each llama.cpp decode call evaluates, in order:
    a reply's first entry is the part of its prompt not taken from the cached context, then
    one per generated token. For tests and benchmarks of the context policy."""
    llm = backend.llm
    counts: list[int] = []
    real_eval = llm.eval

    def counting_eval(tokens: Any) -> Any:
        counts.append(len(tokens))
        return real_eval(tokens)

    llm.eval = counting_eval
    try:
        yield counts
    finally:
        del llm.eval  # the instance attribute hid the class's method


def adapter_transport() -> str:
    """How :meth:`LlamaCppBackend.set_adapter_bytes` hands adapters to llama.cpp here:
    ``fmemopen`` (process memory, no file at all), ``memfd`` (anonymous memory file) or
    ``tempfile`` (0600 file deleted right after loading)."""
    import llama_cpp

    if _libc_fmemopen() is not None and hasattr(llama_cpp, "llama_adapter_lora_init_from_file_ptr"):
        return "fmemopen"
    return "memfd" if _has_memfd() else "tempfile"


def _has_memfd() -> bool:
    return hasattr(os, "memfd_create") and Path("/proc/self/fd").is_dir()


@functools.lru_cache(maxsize=1)
def _libc_fmemopen() -> Any:
    """The C library with ``fmemopen``/``fclose`` typed for ctypes, or None."""
    try:
        libc = ctypes.CDLL(None)
        fmemopen, fclose = libc.fmemopen, libc.fclose
    except (OSError, AttributeError, TypeError):
        return None
    fmemopen.restype = ctypes.c_void_p
    fmemopen.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_char_p]
    fclose.restype = ctypes.c_int
    fclose.argtypes = [ctypes.c_void_p]
    return libc
