"""The one ONNX Runtime session factory.

Every ONNX model the project runs goes through :func:`session`, so that thread counts and execution
providers are chosen in one place, explicitly:

* ``SessionOptions``: ``intra_op_num_threads`` (default 1: a real-time session shares the machine with
  the renderer and the encoder; ``EMOTE_ONNX_THREADS`` or ``threads=`` changes it),
  ``inter_op_num_threads`` 1, sequential execution, full graph optimisation, no spinning threads.
* Providers: the best available of TensorRT > CUDA > CPU, from
  ``onnxruntime.get_available_providers()``, always with the CPU provider last as the fallback for
  operators the accelerator lacks. ``provider=`` (or ``EMOTE_ONNX_PROVIDER``: ``tensorrt``, ``cuda``,
  ``cpu`` or a full name such as ``CUDAExecutionProvider``) forces one; a forced provider that this
  onnxruntime build does not have raises :class:`ProviderError`, which names the providers it does
  have and the ``gpu`` extra that brings the others.

Sessions are cached by (resolved path, file size and mtime, threads, providers): asking twice for the
same model gives the same session object (ONNX Runtime's ``run`` is thread-safe).
"""
from __future__ import annotations

import os
import threading
from pathlib import Path

import onnxruntime as ort

from emote.engine.exceptions import ConfigError, EmoteError, ModelFileError

__all__ = ["PROVIDER_ORDER", "ALIASES", "ProviderError", "available_providers", "choose_providers",
           "session_options", "session", "clear_cache"]

#: Preference order of execution providers (the first available one wins).
PROVIDER_ORDER: tuple[str, ...] = ("TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider")
#: Short names accepted by ``provider=`` and ``EMOTE_ONNX_PROVIDER``.
ALIASES: dict[str, str] = {"tensorrt": "TensorrtExecutionProvider", "trt": "TensorrtExecutionProvider",
                           "cuda": "CUDAExecutionProvider", "cpu": "CPUExecutionProvider"}
ENV_PROVIDER = "EMOTE_ONNX_PROVIDER"
ENV_THREADS = "EMOTE_ONNX_THREADS"

_cache: dict[tuple, ort.InferenceSession] = {}
_lock = threading.Lock()


class ProviderError(EmoteError):
    """A forced execution provider that this onnxruntime build does not have."""


def available_providers() -> list[str]:
    """onnxruntime.get_available_providers() (a function so tests can monkeypatch it)."""
    return list(ort.get_available_providers())


def _resolve_name(name: str) -> str:
    key = name.strip()
    if key.lower() in ALIASES:
        return ALIASES[key.lower()]
    for full in PROVIDER_ORDER:
        if key.lower() == full.lower():
            return full
    if key.endswith("ExecutionProvider"):
        return key
    raise ConfigError(f"unknown ONNX execution provider {name!r}: use one of tensorrt, cuda, cpu "
                      f"(or a full onnxruntime provider name)")


def choose_providers(provider: str | None = None) -> list[str]:
    """Providers for a session, best first, CPU last.

    ``provider`` (else ``$EMOTE_ONNX_PROVIDER``) forces one; None/"" / "auto" chooses
    TensorRT > CUDA > CPU among the available ones.
    """
    have = available_providers()
    forced = provider if provider is not None else os.environ.get(ENV_PROVIDER, "")
    if forced and forced.strip().lower() != "auto":
        name = _resolve_name(forced)
        if name not in have:
            raise ProviderError(f"ONNX execution provider {name} was forced ({forced!r}) but this onnxruntime "
                                f"has only {', '.join(have) or 'none'}; install the GPU build with "
                                f"pip install -e '.[gpu]' (onnxruntime-gpu, tensorrt), or unset {ENV_PROVIDER}")
        return [name] if name == "CPUExecutionProvider" else [name, "CPUExecutionProvider"]
    chosen = [p for p in PROVIDER_ORDER if p in have]
    if "CPUExecutionProvider" not in chosen:
        chosen.append("CPUExecutionProvider")
    return chosen


def _threads(threads: int | None) -> int:
    if threads is None:
        env = os.environ.get(ENV_THREADS, "")
        try:
            threads = int(env) if env else 1
        except ValueError:
            raise ConfigError(f"{ENV_THREADS}={env!r}: must be a whole number of threads >= 1") from None
    if not isinstance(threads, int) or threads < 1 or threads > 256:
        raise ConfigError(f"ONNX intra-op threads must be an integer in 1..256, got {threads!r}")
    return threads


def session_options(threads: int | None = None) -> ort.SessionOptions:
    """Explicit SessionOptions: ``threads`` intra-op threads (default 1), one inter-op thread,
    sequential execution, all graph optimisations, no busy-waiting worker threads."""
    so = ort.SessionOptions()
    so.intra_op_num_threads = _threads(threads)
    so.inter_op_num_threads = 1
    so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    so.log_severity_level = 3
    so.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return so


def session(path: str | os.PathLike, threads: int | None = None, provider: str | None = None) -> ort.InferenceSession:
    """A cached InferenceSession for the ONNX file at ``path`` (see the module docstring).

    Raises ModelFileError for a missing or unreadable file, ProviderError for a forced provider
    that is not available, ConfigError for bad thread counts or provider names.
    """
    p = Path(path).resolve()
    if not p.is_file():
        raise ModelFileError(f"ONNX model not found: {p}")
    n_threads = _threads(threads)
    providers = choose_providers(provider)
    st = p.stat()
    key = (str(p), st.st_size, st.st_mtime_ns, n_threads, tuple(providers))
    with _lock:
        s = _cache.get(key)
        if s is None:
            try:
                s = ort.InferenceSession(str(p), sess_options=session_options(n_threads), providers=providers)
            except Exception as e:   # onnxruntime raises its own Fail/InvalidProtobuf/... types
                raise ModelFileError(f"cannot load ONNX model {p}: {' '.join(str(e).split())[:300]}") from None
            _cache[key] = s
    return s


def clear_cache() -> None:
    """Forget every cached session (their memory is freed when no one else holds them)."""
    with _lock:
        _cache.clear()
