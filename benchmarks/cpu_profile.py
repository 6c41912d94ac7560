"""Where the CPU goes, per process, thread and component, while N live sessions run.

    python -m emote.benchmarks.cpu_profile [--sessions 2] [--seconds 20] [--warmup-s 6]
        [--codec vp8|h264] [--client-decode] [--out out/cpu_profile.json]

1. Starts ``emote serve`` (the real engine, default portrait, engine processes) exactly as the
   latency benchmark does, with a probe in every Python process it starts (a ``sitecustomize``
   on PYTHONPATH: the server and each engine process), and the same probe in this process, which
   runs the N clients (emote.clients.client.run_client, as the capacity benchmark does).
2. The probe measures **CPU time, not wall time** (the machine may be busy with other work):
   * per thread: utime + stime from ``/proc/self/task/TID/stat``, named by Python's thread
     name (digits and session ids folded: ``asyncio_*``, ``engine-*``);
   * per component: each function of ``COMPONENTS`` is wrapped to add its own thread CPU time
     (``time.thread_time``; the time of wrapped functions it calls is subtracted, so components
     do not overlap; coroutines are timed step by step, so awaiting costs nothing);
   * every 0.5 s it appends a snapshot to ``DIR/PID.jsonl``.
3. The table is the difference between the snapshots at the end of the warm-up and at the end:
   CPU ms per wall second (1000 = one core) and CPU ms per video frame (over all sessions at 25
   fps); "(rest of thread)" is the thread's CPU outside any wrapped component. The server's
   per-session held-frame share comes from its /ws stats.

Prints the table and writes JSON. The wrappers cost about 2 us a call (a few hundred calls per
second per session): negligible next to the components they time.
"""
from __future__ import annotations

import argparse
import asyncio
import functools
import importlib.abc
import json
import os
import re
import sys
import tempfile
import threading
import time
from pathlib import Path

__all__ = ["COMPONENTS", "install_probe", "main"]

_TICK_S = 1.0 / os.sysconf("SC_CLK_TCK")
_SNAPSHOT_S = 0.5

#: module -> [(attribute path, label)]. A label names what the function's own CPU time is.
COMPONENTS: dict[str, list[tuple[str, str]]] = {
    # codecs (server: encode video and the returned voice, decode the peer's voice; clients: the reverse)
    "aiortc.codecs.vpx": [("Vp8Encoder.encode", "VP8 encode"), ("Vp8Decoder.decode", "VP8 decode")],
    "aiortc.codecs.h264": [("H264Encoder.encode", "H.264 encode"), ("H264Decoder.decode", "H.264 decode")],
    "aiortc.codecs.opus": [("OpusEncoder.encode", "Opus encode"), ("OpusDecoder.decode", "Opus decode")],
    # RTP plumbing (event loops)
    "aiortc.rtcdtlstransport": [("RTCDtlsTransport._send_rtp", "RTP/RTCP out: SRTP protect + UDP send"),
                                ("RTCDtlsTransport._recv_next", "RTP/RTCP in: UDP, SRTP unprotect, jitter buffer")],
    "aiortc.rtcrtpsender": [("RTCRtpSender._run_rtp", "RTP sender loop (packetize)"),
                            ("RTCRtpSender._run_rtcp", "RTCP sender reports")],
    "aiortc.rtcrtpreceiver": [("RTCRtpReceiver._run_rtcp", "RTCP receiver reports")],
    # the server's session work (event loop)
    "emote.streaming.tracks": [("PortraitVideoTrack.recv", "video track: I420 -> av.VideoFrame"),
                               ("DelayedAudioTrack.recv", "return audio: ring -> av.AudioFrame"),
                               ("AudioInput.convert", "input audio: PyAV resample to 48 kHz"),
                               ("AudioInput.to_engine", "input audio: soxr 48 -> 16 kHz")],
    "emote.streaming.session": [("Session._push_input", "input audio: ring, slicer, submit"),
                                ("Session._on_frames", "engine frames -> frame buffer"),
                                ("Session._watchdog", "session watchdog"),
                                ("Session._listen_reports", "session RTCP-report watch")],
    "emote.streaming.server": [("_Server._push_stats", "/ws stats")],
    # the engine process
    "emote.engine.audio": [("FeatureStream.push", "features"), ("FeatureStream.pull", "features")],
    "emote.engine.pipeline": [("PortraitPipeline._motion", "motion (backbone + expression)")],
    "emote.engine.rig": [("Rig.displacement", "rig")],
    "emote.kernels.warp": [("MeshWarp.backward_field", "warp: backward field"),
                           ("MeshWarp.warp", "warp: remap of the photo")],
    "emote.engine.renderer": [("Renderer._paint", "mouth interior + eyelids")],
    "emote.streaming.encoding": [("to_i420", "RGB -> I420"), ("to_i420_packed", "RGB -> I420")],
    "multiprocessing.connection": [("Connection.send", "pipe: pickle + send"),
                                   ("Connection.recv", "pipe: receive + unpickle")],
    # the benchmark client
    "emote.clients.client": [("_rgb", "client: decoded frame -> RGB"),
                             ("FileAudioTrack.recv", "client: audio source")],
}

# -- the probe (runs inside every profiled process) ---------------------------------------------
_local = threading.local()
_tables: list[tuple[threading.Thread, dict]] = []     # (thread, {label: [cpu_s, calls]}) of every thread
_tables_lock = threading.Lock()


def _table() -> dict:
    t = getattr(_local, "table", None)
    if t is None:
        t = _local.table = {}
        _local.stack = []
        with _tables_lock:
            _tables.append((threading.current_thread(), t))
    return t


def _enter() -> list:
    """Push a frame [children_cpu_s] for the current thread; returns it."""
    _table()
    frame = [0.0]
    _local.stack.append(frame)
    return frame


def _leave(frame: list, label: str, spent: float, count: int) -> None:
    """Pop ``frame``, charge ``spent`` minus its children to ``label``, and ``spent`` to the parent."""
    stack = _local.stack
    stack.pop()
    row = _local.table.setdefault(label, [0.0, 0])
    row[0] += spent - frame[0]
    row[1] += count
    if stack:
        stack[-1][0] += spent


class _TimedCoroutine:
    """Awaitable driving ``coro`` step by step, charging each step's thread CPU to ``label``."""

    def __init__(self, coro, label: str) -> None:
        self.coro, self.label = coro, label

    def __await__(self):
        value, exc, first = None, None, True
        while True:
            frame, t = _enter(), time.thread_time()
            try:
                y = self.coro.send(value) if exc is None else self.coro.throw(exc)
            except StopIteration as stop:
                _leave(frame, self.label, time.thread_time() - t, int(first))
                return stop.value
            except BaseException:
                _leave(frame, self.label, time.thread_time() - t, int(first))
                raise
            _leave(frame, self.label, time.thread_time() - t, int(first))
            first = False
            try:
                value, exc = (yield y), None
            except BaseException as e:  # noqa: BLE001 - thrown in by the event loop (cancel): pass it on
                value, exc = None, e


def _timed(fn, label: str):
    """``fn`` wrapped to charge its own thread CPU time to ``label`` (coroutine functions too)."""
    if asyncio.iscoroutinefunction(fn):
        @functools.wraps(fn)
        async def coro_wrapper(*args, **kwargs):
            return await _TimedCoroutine(fn(*args, **kwargs), label)
        return coro_wrapper

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        frame, t = _enter(), time.thread_time()
        try:
            return fn(*args, **kwargs)
        finally:
            _leave(frame, label, time.thread_time() - t, 1)
    wrapper.__emote_timed__ = True
    return wrapper


def _patch(module) -> None:
    """Wrap the COMPONENTS of ``module`` (already executed) in place."""
    for path, label in COMPONENTS.get(module.__name__, []):
        *owner_path, name = path.split(".")
        owner = module
        for part in owner_path:
            owner = getattr(owner, part, None)
        fn = getattr(owner, name, None) if owner is not None else None
        if fn is None or getattr(fn, "__emote_timed__", False) or getattr(fn, "__wrapped__", None):
            continue
        setattr(owner, name, _timed(fn, label))


class _PatchingFinder(importlib.abc.MetaPathFinder):
    """Patches a COMPONENTS module right after it is executed (before its importer continues)."""

    def find_spec(self, name, path, target=None):
        if name not in COMPONENTS:
            return None
        for finder in sys.meta_path:
            if finder is self or not hasattr(finder, "find_spec"):
                continue
            spec = finder.find_spec(name, path, target)
            if spec is not None and spec.loader is not None and hasattr(spec.loader, "exec_module"):
                run = spec.loader.exec_module

                def exec_module(module, _run=run):
                    _run(module)
                    _patch(module)
                spec.loader.exec_module = exec_module
                return spec
            if spec is not None:
                return spec
        return None


def _proc_cpu_s(path: str) -> float:
    """utime + stime (s) from a /proc/.../stat file (0 if it is gone)."""
    try:
        with open(path) as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) * _TICK_S
    except (OSError, IndexError, ValueError):
        return 0.0


def _group(name: str) -> str:
    """Thread name with its counters and ids folded: asyncio_3 -> asyncio_*, engine-1a2b3c4d -> engine-*."""
    name = re.sub(r"-[0-9a-f]{8}$", "-*", name)
    name = re.sub(r"\d+", "*", name)
    return name.split(" (")[0]


def _snapshot(threads_seen: dict) -> dict:
    """One snapshot of this process: its CPU, each thread's CPU and the components per thread group."""
    names = {t.native_id: t.name for t in threading.enumerate() if t.native_id}
    for tid in os.listdir("/proc/self/task"):
        cpu = _proc_cpu_s(f"/proc/self/task/{tid}/stat")
        name = names.get(int(tid))
        if name is None:
            try:
                with open(f"/proc/self/task/{tid}/comm") as f:
                    name = "native:" + f.read().strip()
            except OSError:
                name = "native:?"
        threads_seen[tid] = (_group(name), cpu)     # a finished thread keeps its last reading
    with _tables_lock:
        tables = list(_tables)
    comps: dict[str, dict[str, list]] = {}
    for thread, table in tables:
        g = comps.setdefault(_group(thread.name), {})
        for label, (cpu, calls) in list(table.items()):
            row = g.setdefault(label, [0.0, 0])
            row[0] += cpu
            row[1] += calls
    return {"t": time.monotonic(), "cpu_s": _proc_cpu_s("/proc/self/stat"),
            "threads": {tid: list(v) for tid, v in threads_seen.items()}, "components": comps}


def _role() -> str:
    with open("/proc/self/cmdline", "rb") as f:
        argv = f.read().decode(errors="replace").split("\0")
    if "emote.streaming.worker" in argv:
        return "engine"
    if "emote.clients.serve_cmd" in argv or "serve" in argv[1:3]:
        return "server"
    return "clients"


def install_probe(out_dir: str, role: str | None = None) -> None:
    """Start timing this process: wrap COMPONENTS (now and as they are imported) and append a
    snapshot to ``out_dir/PID.jsonl`` every 0.5 s and at exit."""
    import atexit

    role = role or _role()
    for name in list(COMPONENTS):
        if name in sys.modules:
            _patch(sys.modules[name])
    sys.meta_path.insert(0, _PatchingFinder())
    path = Path(out_dir) / f"{os.getpid()}.jsonl"
    seen: dict = {}
    lock = threading.Lock()

    def write() -> None:
        with lock:
            snap = {"role": role, "pid": os.getpid(), **_snapshot(seen)}
            try:
                with open(path, "a") as f:
                    f.write(json.dumps(snap) + "\n")
            except OSError:                       # the run is over and its directory removed
                pass

    def loop() -> None:
        while True:
            time.sleep(_SNAPSHOT_S)
            write()

    threading.Thread(target=loop, name="cpu-probe", daemon=True).start()
    atexit.register(write)


_SITECUSTOMIZE = """\
import os
if os.environ.get("EMOTE_CPU_PROBE_DIR"):
    from emote.benchmarks.cpu_profile import install_probe
    install_probe(os.environ["EMOTE_CPU_PROBE_DIR"])
"""


# -- the run and the table ------------------------------------------------------------------------
def _at(snaps: list[dict], t: float, after: bool) -> dict | None:
    """The first snapshot at or after ``t`` (after=True) or the last one at or before it."""
    if after:
        return next((s for s in snaps if s["t"] >= t), None)
    return next((s for s in reversed(snaps) if s["t"] <= t), None)


def _diff(a: dict, b: dict) -> dict:
    """CPU spent between snapshots a and b: total, per thread group, per (group, component)."""
    groups: dict[str, float] = {}
    for tid, (g, cpu) in b["threads"].items():
        groups[g] = groups.get(g, 0.0) + cpu - (a["threads"].get(tid, [g, 0.0])[1])
    comps: dict[str, dict[str, tuple[float, int]]] = {}
    for g, table in b["components"].items():
        old = a["components"].get(g, {})
        for label, (cpu, calls) in table.items():
            c0, n0 = old.get(label, [0.0, 0])
            if cpu - c0 > 0 or calls - n0 > 0:
                comps.setdefault(g, {})[label] = (cpu - c0, calls - n0)
    return {"cpu_s": b["cpu_s"] - a["cpu_s"], "groups": groups, "components": comps}


def account(probe_dir: Path, t0: float, t1: float) -> list[dict]:
    """Per profiled process: CPU between wall times t0 and t1 (monotonic), from its snapshots."""
    out = []
    for p in sorted(probe_dir.glob("*.jsonl")):
        snaps = [json.loads(ln) for ln in p.read_text().splitlines() if ln.strip()]
        if not snaps:
            continue
        a = _at(snaps, t0, after=False) or snaps[0]
        b = _at(snaps, t1, after=True) or snaps[-1]
        if b["t"] <= a["t"]:
            continue
        d = _diff(a, b)
        out.append({"role": snaps[0]["role"], "pid": snaps[0]["pid"], "seconds": b["t"] - a["t"], **d})
    return out


def table_rows(procs: list[dict], frames: int) -> list[dict]:
    """Flat rows: process, thread group, component, ms CPU per wall second and per frame."""
    rows = []
    per_s = lambda cpu, p: cpu / p["seconds"] * 1000.0          # noqa: E731
    for p in sorted(procs, key=lambda p: (p["role"], -p["cpu_s"])):
        name = f"{p['role']}[{p['pid']}]"
        rows.append({"process": name, "thread": "(all)", "component": "(process total)",
                     "ms_per_s": per_s(p["cpu_s"], p), "ms_per_frame": p["cpu_s"] * 1000 / frames})
        for g, cpu in sorted(p["groups"].items(), key=lambda kv: -kv[1]):
            if cpu <= 0:
                continue
            comps = p["components"].get(g, {})
            for label, (c, n) in sorted(comps.items(), key=lambda kv: -kv[1][0]):
                rows.append({"process": name, "thread": g, "component": label, "calls": n,
                             "ms_per_s": per_s(c, p), "ms_per_frame": c * 1000 / frames})
            rest = cpu - sum(c for c, _ in comps.values())
            rows.append({"process": name, "thread": g, "component": "(rest of thread)" if comps else "(thread)",
                         "ms_per_s": per_s(rest, p), "ms_per_frame": rest * 1000 / frames})
    return rows


def print_table(rows: list[dict], min_ms_per_s: float = 2.0) -> None:
    print(f"{'process':<16} {'thread':<18} {'component':<52} {'ms/s':>7} {'ms/frame':>9}")
    for r in rows:
        if r["component"] != "(process total)" and abs(r["ms_per_s"]) < min_ms_per_s:
            continue
        bar = "-" * 105 if r["component"] == "(process total)" else None
        if bar:
            print(bar)
        print(f"{r['process']:<16} {r['thread']:<18} {r['component'][:52]:<52} {r['ms_per_s']:7.1f} "
              f"{r['ms_per_frame']:9.2f}")


def _machine_busy_s() -> float:
    """CPU seconds (all cores, all processes) since boot, from /proc/stat."""
    with open("/proc/stat") as f:
        v = [int(x) for x in f.readline().split()[1:]]
    return (sum(v) - v[3] - v[4]) * _TICK_S


def parse_metrics(text: str) -> dict:
    """The server's /metrics -> {"frames_sent", "frames_held", "buckets": {stage: [(le_s, count)]}}."""
    from prometheus_client.parser import text_string_to_metric_families

    out: dict = {"frames_sent": 0.0, "frames_held": 0.0, "buckets": {}}
    for fam in text_string_to_metric_families(text):
        for s in fam.samples:
            if s.name == "emote_frames_sent_total":
                out["frames_sent"] = s.value
            elif s.name == "emote_frames_held_total":
                out["frames_held"] = s.value
            elif s.name == "emote_stage_seconds_bucket":
                out["buckets"].setdefault(s.labels["stage"], []).append((float(s.labels["le"]), s.value))
    return out


def stage_quantiles(a: dict, b: dict, qs: tuple[float, ...] = (0.5, 0.95, 0.99)) -> dict:
    """Per stage, between two parse_metrics results: the count and the upper bucket bound (ms)
    under which each quantile of the observations fell (wall time, from the server's histograms)."""
    out = {}
    for stage, rows in b["buckets"].items():
        old = dict(a["buckets"].get(stage, []))
        cum = [(le, n - old.get(le, 0.0)) for le, n in sorted(rows)]
        total = cum[-1][1] if cum else 0.0
        if total <= 0:
            continue
        out[stage] = {"n": int(total), **{f"p{int(q * 100)}_ms_at_most": next(
            (round(le * 1000, 1) for le, n in cum if n >= q * total), None) for q in qs}}
    return out


async def _metrics(url: str) -> dict:
    import aiohttp

    async with aiohttp.ClientSession() as http, http.get(url + "/metrics") as r:
        return parse_metrics(await r.text())


async def _run_clients(url: str, sessions: int, seconds: float, codec: str | None, decode: bool):
    from emote.benchmarks.latency import make_onsets
    from emote.clients.client import ClientSettings, FileAudioTrack, run_client

    audio, _ = make_onsets(int(seconds / 1.6) + 2)
    return await asyncio.gather(*(run_client(
        ClientSettings(url, seconds=seconds, ice_addresses=("127.0.0.1",), keep_frames=False,
                       video_codec=codec, decode_video=decode), FileAudioTrack(audio, pre_encoded=not decode))
        for _ in range(sessions)))


def profile(sessions: int, seconds: float, warmup_s: float, codec: str | None, decode: bool,
            out: Path) -> dict:
    """Run the server and the clients with the probe; returns the accounting (see the module doc)."""
    import shutil

    from emote.benchmarks.latency import _free_port, start_server

    probe_dir = Path(tempfile.mkdtemp(prefix="emote-cpu-"))
    (probe_dir / "site").mkdir()
    (probe_dir / "site" / "sitecustomize.py").write_text(_SITECUSTOMIZE)
    os.environ["EMOTE_CPU_PROBE_DIR"] = str(probe_dir)
    os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, [str(probe_dir / "site"), os.environ.get("PYTHONPATH")]))
    install_probe(str(probe_dir), role="clients")
    port = _free_port()
    url = f"http://127.0.0.1:{port}"
    proc = start_server(port, 60.0, out.with_suffix(".server.log"))
    marks: dict = {}

    async def run():
        task = asyncio.ensure_future(_run_clients(url, sessions, warmup_s + seconds, codec, decode))
        await asyncio.sleep(warmup_s)
        marks["t0"], marks["busy0"], marks["m0"] = time.monotonic(), _machine_busy_s(), await _metrics(url)
        await asyncio.sleep(seconds - 0.5)
        marks["t1"], marks["busy1"], marks["m1"] = time.monotonic(), _machine_busy_s(), await _metrics(url)
        return await task

    try:
        recs = asyncio.run(run())
    finally:
        proc.terminate()
        proc.wait(15)
    time.sleep(_SNAPSHOT_S * 2)                   # the last snapshots of the exiting processes
    procs = account(probe_dir, marks["t0"], marks["t1"])
    shutil.rmtree(probe_dir, ignore_errors=True)
    return _summary(procs, recs, marks, sessions, codec, decode)


def _summary(procs: list[dict], recs: list, marks: dict, sessions: int, codec: str | None,
             decode: bool) -> dict:
    """The JSON of a run: the table rows, totals, and what the clients and the server saw."""
    window = marks["t1"] - marks["t0"]
    frames = max(1, round(sessions * 25 * window))
    total = sum(p["cpu_s"] for p in procs)
    m0, m1 = marks["m0"], marks["m1"]
    sent = m1["frames_sent"] - m0["frames_sent"]
    return {"sessions": sessions, "window_s": round(window, 2), "frames": frames,
            "codec": codec or "default (VP8)", "client_decode": decode,
            "fps_received": [round(r.video_fps(), 2) for r in recs],
            "held_share": [(r.stats[-1]["frames_held"] / max(1, r.stats[-1]["frames_sent"])) if r.stats else None
                           for r in recs],
            "held_share_window": round((m1["frames_held"] - m0["frames_held"]) / max(1.0, sent), 4),
            "stages_wall_ms": stage_quantiles(m0, m1),
            "profiled_cpu_ms_per_s": round(total / window * 1000, 1),
            "machine_cpu_ms_per_s": round((marks["busy1"] - marks["busy0"]) / window * 1000, 1),
            "cores": os.cpu_count(), "processes": procs, "rows": table_rows(procs, frames)}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    ap.add_argument("--sessions", type=int, default=2)
    ap.add_argument("--seconds", type=float, default=20.0, help="measured seconds after the warm-up")
    ap.add_argument("--warmup-s", type=float, default=6.0)
    ap.add_argument("--codec", choices=("vp8", "h264"), default=None,
                    help="the video codec the clients ask for (default: aiortc's order, VP8 first)")
    ap.add_argument("--client-decode", action="store_true",
                    help="the clients decode the video and encode their audio live, as a real client "
                         "(default: as the capacity benchmark's clients, they count complete frames "
                         "without decoding them and send audio encoded before the run)")
    ap.add_argument("--out", default="out/cpu_profile.json")
    a = ap.parse_args(argv)
    if a.sessions < 1 or a.seconds < 2 or a.warmup_s < 2:
        ap.error("--sessions >= 1, --seconds >= 2, --warmup-s >= 2")
    out = Path(a.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    res = profile(a.sessions, a.seconds, a.warmup_s, {"vp8": "VP8", "h264": "H264"}.get(a.codec),
                  a.client_decode, out)
    print(f"{a.sessions} sessions, {res['window_s']} s measured, codec {res['codec']}, client decode "
          f"{'on' if a.client_decode else 'off'}; CPU time per process / thread / component:")
    print_table(res["rows"])
    print(f"profiled processes: {res['profiled_cpu_ms_per_s']} ms/s; whole machine (all processes, "
          f"{res['cores']} cores = {res['cores'] * 1000} ms/s): {res['machine_cpu_ms_per_s']} ms/s")
    held = [round(h * 100, 1) if h is not None else None for h in res["held_share"]]
    print(f"received fps {res['fps_received']}, held {held} % (whole sessions), "
          f"{res['held_share_window'] * 100:.1f} % of the measured window's frames")
    print("server stage latencies (wall ms, upper bucket bounds: p50 / p95 / p99): " + "; ".join(
        f"{k} {v['p50_ms_at_most']} / {v['p95_ms_at_most']} / {v['p99_ms_at_most']}"
        for k, v in res["stages_wall_ms"].items()))
    out.write_text(json.dumps(res, indent=1))
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
