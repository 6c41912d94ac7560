"""benchmarks/cpu_profile.py: the accounting that decides its table (the run itself is a benchmark)."""
from __future__ import annotations

import asyncio
import json
import time
import types

import pytest

from emote.benchmarks import cpu_profile as P


def _busy(seconds: float) -> None:
    end = time.thread_time() + seconds
    while time.thread_time() < end:
        pass


def _row(label: str) -> list:
    return P._table().get(label, [0.0, 0])


def test_nested_components_are_charged_their_own_time_only():
    inner = P._timed(lambda: _busy(0.05), "test inner")
    outer = P._timed(lambda: (_busy(0.01), inner(), inner()), "test outer")
    outer()
    o, i = _row("test outer"), _row("test inner")
    assert (o[1], i[1]) == (1, 2)
    assert i[0] >= 0.09 and 0.005 <= o[0] < 0.05          # the outer's own 10 ms, not the inner's 100


def test_a_coroutine_is_charged_for_its_steps_not_for_waiting():
    async def work():
        _busy(0.02)
        await asyncio.sleep(0.2)
        _busy(0.02)
        return 7
    timed = P._timed(work, "test coroutine")
    assert asyncio.run(timed()) == 7
    cpu, calls = _row("test coroutine")
    assert calls == 1 and 0.035 <= cpu < 0.15


def test_a_cancelled_coroutine_passes_the_cancellation_on():
    async def forever():
        await asyncio.sleep(10)

    async def go():
        t = asyncio.create_task(P._timed(forever, "test cancelled")())
        await asyncio.sleep(0.01)
        t.cancel()
        with pytest.raises(asyncio.CancelledError):
            await t
    asyncio.run(go())
    assert _row("test cancelled")[1] == 1


def test_patch_wraps_the_listed_functions_once(monkeypatch):
    mod = types.ModuleType("emote_fake_component_mod")
    mod.f = lambda x: x + 1

    class C:
        def m(self):
            return 3
    mod.C = C
    monkeypatch.setitem(P.COMPONENTS, mod.__name__, [("f", "test f"), ("C.m", "test m"), ("missing", "x")])
    P._patch(mod)
    first = mod.f
    P._patch(mod)                                          # idempotent
    assert mod.f is first and mod.f(1) == 2 and mod.C().m() == 3
    assert _row("test f")[1] == 1 and _row("test m")[1] == 1


def _snap(t, cpu, threads, comps):
    return {"role": "server", "pid": 42, "t": t, "cpu_s": cpu, "threads": threads, "components": comps}


def test_account_diffs_the_snapshots_around_the_window(tmp_path):
    snaps = [_snap(0.0, 1.0, {"1": ["MainThread", 0.5]}, {}),
             _snap(10.0, 3.0, {"1": ["MainThread", 1.5], "2": ["asyncio_*", 0.4]},
                   {"MainThread": {"x": [0.6, 100]}, "asyncio_*": {"VP8 encode": [0.3, 250]}}),
             _snap(20.0, 5.0, {"1": ["MainThread", 2.5], "2": ["asyncio_*", 0.9]},
                   {"MainThread": {"x": [1.0, 200]}, "asyncio_*": {"VP8 encode": [0.7, 500]}})]
    (tmp_path / "42.jsonl").write_text("\n".join(json.dumps(s) for s in snaps))
    (p,) = P.account(tmp_path, 9.0, 21.0)                 # from the snapshot at 0 to the one at 20
    assert p["seconds"] == 20.0 and p["cpu_s"] == 4.0
    assert p["groups"] == {"MainThread": 2.0, "asyncio_*": 0.9}
    assert p["components"]["asyncio_*"]["VP8 encode"] == (0.7, 500)
    rows = P.table_rows([p], frames=1000)
    total = next(r for r in rows if r["component"] == "(process total)")
    rest = next(r for r in rows if r["thread"] == "MainThread" and r["component"] == "(rest of thread)")
    assert total["ms_per_s"] == pytest.approx(200.0) and total["ms_per_frame"] == pytest.approx(4.0)
    assert rest["ms_per_s"] == pytest.approx(50.0)         # 2.0 s of thread minus 1.0 s of x, over 20 s


def test_stage_quantiles_come_from_the_histogram_difference():
    from emote.streaming.metrics import StreamingMetrics
    m = StreamingMetrics()
    for _ in range(10):
        m.observe_stage("render", 0.5)                     # before the window: left out
    a = P.parse_metrics(m.render().decode())
    for s in [0.003] * 90 + [0.07] * 10:
        m.observe_stage("render", s)
    m.frames_sent.inc(100)
    m.frames_held.inc(3)
    b = P.parse_metrics(m.render().decode())
    q = P.stage_quantiles(a, b)["render"]
    assert q["n"] == 100 and q["p50_ms_at_most"] == 5.0 and q["p95_ms_at_most"] == 80.0
    assert (b["frames_sent"], b["frames_held"]) == (100.0, 3.0)
