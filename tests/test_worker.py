"""streaming.worker's engine processes: one BLAS thread, spares that warm up at a low priority."""
from __future__ import annotations

import os
import sys
import threading

import numpy as np
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
        assert w.load(str(default_portrait_path())) > 0               # latency samples
        # read only now: between fork and exec, /proc/PID/environ is still the parent's
        with open(f"/proc/{w._proc.pid}/environ", "rb") as f:
            env = dict(kv.split(b"=", 1) for kv in f.read().split(b"\0") if b"=" in kv)
        assert env[b"OPENBLAS_NUM_THREADS"] == b"1"
    finally:
        w.stop()
        w.join(10.0)
    assert w._proc.returncode == 0


def test_window_parts_deliver_each_frame_as_it_is_rendered(tmp_path):
    """EngineCore.window_parts with the real pipeline: one batch per frame, in order, stamped as
    each is done; the same frames as pull() (all at once) on an identical pipeline."""
    from emote.engine.pipeline import PipelineSettings, load_pipeline
    from emote.engine.resources import default_portrait_path
    from emote.streaming.encoding import to_i420
    rng = np.random.default_rng(0)
    audio = (0.1 * rng.standard_normal(16000)).astype(np.float32)
    settings = PipelineSettings(size_px=128, cache_dir=str(tmp_path))
    a = W.EngineCore(load_pipeline(default_portrait_path(), settings))
    b = load_pipeline(default_portrait_path(), settings)
    parts = list(a.window_parts(audio, 0, 640, 0.0))
    b.push(audio)
    whole = [(f.index, to_i420(f.rgb)) for f in b.pull()]
    assert len(parts) >= 20 and all(len(p.frames) == 1 for p in parts)
    assert [p.frames[0][0] for p in parts] == [i for i, _ in whole] == list(range(len(parts)))
    done = [p.t_done for p in parts]
    assert done == sorted(done) and done[-1] > done[0]
    for p, (_, img) in zip(parts, whole):
        np.testing.assert_array_equal(p.frames[0][1], img)
    assert len(list(a.window_parts(np.zeros(0, np.float32), len(parts), 640, 0.0))) == 1   # nothing new: one empty
