"""streaming.worker's engine processes: one BLAS thread, spares that warm up at a low priority."""
from __future__ import annotations

import os
import sys
import threading

import pytest

from emote.streaming import worker as W


def test_engine_processes_get_one_blas_thread_unless_told_otherwise(monkeypatch):
    monkeypatch.setenv("OPENBLAS_NUM_THREADS", "8")
    env = W._engine_env()
    assert all(env[k] == "1" for k in W.BLAS_THREAD_VARS)
    assert env["PATH"] == os.environ["PATH"]                       # the rest is inherited
    monkeypatch.setenv("EMOTE_ENGINE_BLAS_THREADS", "2")
    assert W._engine_env()["OMP_NUM_THREADS"] == "2"


def _probe_module(tmp_path, monkeypatch, name: str) -> None:
    """A module that records, when imported, the nice value of the thread importing it."""
    (tmp_path / f"{name}.py").write_text(
        "import os, threading\n"
        "NICE = os.getpriority(os.PRIO_PROCESS, threading.get_native_id())\n"
        "THREAD = threading.current_thread().name\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, name, raising=False)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="per-thread nice values are Linux's")
def test_a_spare_imports_in_a_lower_priority_thread_and_keeps_its_own(tmp_path, monkeypatch):
    _probe_module(tmp_path, monkeypatch, "emote_nice_probe")
    monkeypatch.setattr(W, "_ENGINE_MODULES", ("emote_nice_probe",))
    me = os.getpriority(os.PRIO_PROCESS, threading.get_native_id())
    W._import_engine(background=True)
    probe = sys.modules["emote_nice_probe"]
    assert probe.THREAD == "engine-import" and probe.NICE == min(19, me + W.SPARE_IMPORT_NICE)
    assert os.getpriority(os.PRIO_PROCESS, threading.get_native_id()) == me
    monkeypatch.delitem(sys.modules, "emote_nice_probe")
    W._import_engine(background=False)                                # in this thread, as is
    assert sys.modules["emote_nice_probe"].NICE == me


def test_an_import_error_in_the_import_thread_reaches_the_caller(monkeypatch):
    monkeypatch.setattr(W, "_ENGINE_MODULES", ("emote_no_such_module_xyz",))
    with pytest.raises(ModuleNotFoundError):
        W._import_engine(background=True)


def test_a_background_spare_serves_a_session_and_runs_with_one_blas_thread(tmp_path):
    from emote.engine.resources import default_portrait_path
    w = W.ProcessEngineWorker({"size_px": 128, "cache_dir": str(tmp_path)}, background=True)
    try:
        assert w._proc.args[-1] == "background"
        with open(f"/proc/{w._proc.pid}/environ", "rb") as f:
            env = dict(kv.split(b"=", 1) for kv in f.read().split(b"\0") if b"=" in kv)
        assert env[b"OPENBLAS_NUM_THREADS"] == b"1"
        assert w.load(str(default_portrait_path())) > 0               # latency samples
    finally:
        w.stop()
        w.join(10.0)
    assert w._proc.returncode == 0
