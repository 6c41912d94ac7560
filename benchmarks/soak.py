"""Soak: N live sessions for M minutes; memory growth, A/V drift, delivered frame rate, drops.

    python -m emote.benchmarks.soak [--sessions 2] [--minutes 2] [--out out/soak.json]
    python -m emote.benchmarks.soak --sessions 2 --minutes 30        # the documented long run

1. Starts ``emote serve`` (the real engine, default portrait, engine processes) in its own process,
   ICE on 127.0.0.1, unless ``--url`` names a running server.
2. N Python clients (aiortc, loopback, no STUN) each send speech in a loop, in real time, for M
   minutes, and count what comes back without keeping it (a few numbers a frame). They share this
   machine with the server, so they skip what a real remote client does on its own machine: the
   speech is Opus-encoded once before the run, and the video is counted and timed per complete
   frame (its pts and arrival) without being decoded.
3. Every ``--sample-s`` seconds it records, per client: frames received in that interval, and the
   medians of ``arrival - pts`` for video (pts / 90 kHz) and audio (pts / 48 kHz); for the server:
   the resident memory of its process tree (``/proc``) and each session's counters (frames sent,
   held, windows dropped) from the /ws stats.

Definitions (what the summary prints):
* memory growth: (RSS of the server's process tree at the end / after the warm-up) - 1;
* A/V drift: how far the video's timeline slid against the audio's between the first and the
  last sample after the warm-up: change of median(arrival - video pts) minus change of
  median(arrival - audio pts), ms. A receiver that plays by timestamps sees exactly this change
  in lip sync; 0 means the two tracks keep their initial (engine-set) alignment;
* delivered frame rate: frames received / seconds, per client, over the whole run after the
  warm-up (minimum over clients), and the lowest single interval;
* dropped frames: frames the server held (repeated because the engine was late) and audio
  windows it dropped, from its counters.
Writes JSON and a PNG plot (RSS, fps and A/V offset against time).
"""
from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp
import numpy as np
from aiortc import RTCConfiguration, RTCPeerConnection, RTCSessionDescription
from aiortc.mediastreams import MediaStreamError

from emote.benchmarks.latency import _free_port, start_server
from emote.clients.client import (FileAudioTrack, count_without_decoding, hang_up, opus_packets,
                                  read_audio_48k)
from emote.engine.resources import demo_speech_path
from emote.streaming.ice import filter_sdp_candidates, restrict_ice_addresses
from emote.streaming.jitter import install as install_jitter_buffer

RATE = 48000


class LoopingAudioTrack(FileAudioTrack):
    """Plays ``samples`` (float32 mono 48 kHz) in a loop, in real time, until stopped.
    ``pre_encoded`` (see FileAudioTrack): one loop of whole 20 ms packets is encoded once and
    replayed (the loop's last packet is padded with silence to 20 ms)."""

    def __init__(self, samples: np.ndarray, pre_encoded: bool = False) -> None:
        x = np.asarray(samples, np.float32)
        super().__init__(np.pad(x, (0, -len(x) % 960)) if pre_encoded else x)
        if pre_encoded:                  # whole packets: the loop's packet n is _frame(n)
            self._packets = opus_packets([self._frame(n) for n in range(len(self.samples) // 960)])

    def _packet_index(self, n: int) -> int:
        return n % len(self._packets)

    def _chunk(self, n: int) -> np.ndarray:
        x = self.samples
        i = (n * 960) % len(x)
        out = x[i:i + 960]
        return out if len(out) == 960 else np.concatenate([out, x[:960 - len(out)]])


@dataclass
class ClientLog:
    """What one soak client keeps: counters of the current interval and a row per interval."""

    frames: int = 0
    video_offsets: list[float] = field(default_factory=list)   # arrival - pts (s), this interval
    audio_offsets: list[float] = field(default_factory=list)
    stats: dict = field(default_factory=dict)                 # the server's newest /ws stats
    rows: list[dict] = field(default_factory=list)
    error: str | None = None

    def close_interval(self, t: float, seconds: float) -> dict:
        row = {"t_s": round(t, 1), "fps": round(self.frames / seconds, 2),
               "video_offset_ms": _median_ms(self.video_offsets), "audio_offset_ms": _median_ms(self.audio_offsets),
               **{k: self.stats.get(k) for k in ("frames_sent", "frames_held", "dropped_windows", "padded_s")}}
        self.rows.append(row)
        self.frames, self.video_offsets, self.audio_offsets = 0, [], []
        return row


def _median_ms(xs: list[float]) -> float | None:
    return round(float(np.median(xs)) * 1000, 2) if xs else None


def tree_rss_mb(pid: int) -> float:
    """Resident memory (MB) of ``pid`` and all its descendants, from /proc."""
    total, todo = 0.0, [pid]
    while todo:
        p = todo.pop()
        try:
            with open(f"/proc/{p}/status") as f:
                total += next(int(ln.split()[1]) for ln in f if ln.startswith("VmRSS:")) / 1024
            for task in os.listdir(f"/proc/{p}/task"):
                with open(f"/proc/{p}/task/{task}/children") as f:
                    todo += [int(c) for c in f.read().split()]
        except (OSError, StopIteration):
            continue
    return total


async def _consume(track, log: ClientLog) -> None:
    while True:
        try:
            frame = await track.recv()
        except MediaStreamError:
            return
        now = time.monotonic()
        if track.kind == "video":
            log.frames += 1
            log.video_offsets.append(now - frame.pts / 90000)
        else:
            log.audio_offsets.append(now - frame.pts / RATE)


async def _watch_ws(http: aiohttp.ClientSession, url: str, sid: str, log: ClientLog) -> None:
    async with http.ws_connect(url.replace("http", "ws", 1) + f"/ws?session={sid}", heartbeat=5.0) as ws:
        async for msg in ws:
            if msg.type == aiohttp.WSMsgType.TEXT:
                m = json.loads(msg.data)
                if m.get("type") == "stats":
                    log.stats = m


async def run_soak_client(url: str, audio: np.ndarray, log: ClientLog, stop: asyncio.Event) -> None:
    """One peer on loopback (no STUN): sends ``audio`` in a loop until ``stop``; counts what returns."""
    pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
    source = LoopingAudioTrack(audio, pre_encoded=True)
    tasks: list[asyncio.Task] = []

    @pc.on("track")
    def _on_track(track) -> None:
        for t in pc.getTransceivers():
            if t.receiver.track is track:
                install_jitter_buffer(t.receiver, track.kind)
                if track.kind == "video":       # counted and timed, not decoded: see the docstring
                    count_without_decoding(t.receiver)
        tasks.append(asyncio.create_task(_consume(track, log)))

    pc.addTrack(source)
    pc.addTransceiver("video", direction="recvonly")
    try:
        async with aiohttp.ClientSession() as http:
            await pc.setLocalDescription(await pc.createOffer())
            body = {"sdp": pc.localDescription.sdp, "type": "offer"}
            async with http.post(url + "/offer", json=body) as r:
                if r.status != 200:
                    raise RuntimeError(f"offer refused: HTTP {r.status} {await r.text()}")
                answer = await r.json()
            sdp = filter_sdp_candidates(answer["sdp"], ("127.0.0.1",))
            await pc.setRemoteDescription(RTCSessionDescription(sdp=sdp, type="answer"))
            tasks.append(asyncio.create_task(_watch_ws(http, url, answer["session"], log)))
            await stop.wait()
    except Exception as e:  # noqa: BLE001 - a failed client is a result, reported in the JSON
        log.error = f"{type(e).__name__}: {e}"
    finally:
        await hang_up(pc, source, tasks)


async def soak(url: str, server_pid: int | None, sessions: int, seconds: float, sample_s: float,
               warmup_s: float) -> dict:
    """Run the clients, sample every ``sample_s``; rows per client and the server's RSS."""
    restrict_ice_addresses(("127.0.0.1",))
    audio = read_audio_48k(str(demo_speech_path()))
    audio = np.concatenate([audio, np.zeros(RATE, np.float32)])          # a pause between loops
    logs = [ClientLog() for _ in range(sessions)]
    stop = asyncio.Event()
    clients = [asyncio.create_task(run_soak_client(url, audio, lg, stop)) for lg in logs]
    t0, rss = time.monotonic(), []
    for lg in logs:
        lg.frames = 0
    n_samples = int(np.ceil((seconds + warmup_s) / sample_s))
    for i in range(1, n_samples + 1):
        await asyncio.sleep(max(0.0, t0 + i * sample_s - time.monotonic()))
        t = time.monotonic() - t0
        rows = [lg.close_interval(t, sample_s) for lg in logs]
        mem = tree_rss_mb(server_pid) if server_pid else None
        rss.append({"t_s": round(t, 1), "rss_mb": round(mem, 1) if mem else None})
        fps = " ".join(f"{r['fps']:5.1f}" for r in rows)
        print(f"  {t:7.0f} s  fps {fps}"
              + (f"  rss {mem:7.1f} MB" if mem else ""), flush=True)
    stop.set()
    await asyncio.gather(*clients)
    return summarize(logs, rss, warmup_s, sample_s)


def _drift_ms(rows: list[dict]) -> float | None:
    ok = [r for r in rows if r["video_offset_ms"] is not None and r["audio_offset_ms"] is not None]
    if len(ok) < 2:
        return None
    av = [r["video_offset_ms"] - r["audio_offset_ms"] for r in ok]
    return round(av[-1] - av[0], 2)


def summarize(logs: list[ClientLog], rss: list[dict], warmup_s: float, sample_s: float) -> dict:
    """The numbers of the module docstring from the sampled rows."""
    per_client = []
    for lg in logs:
        rows = [r for r in lg.rows if r["t_s"] > warmup_s + 1e-6]
        last = lg.rows[-1] if lg.rows else {}
        per_client.append({
            "fps_mean": round(float(np.mean([r["fps"] for r in rows])), 2) if rows else 0.0,
            "fps_min_interval": min((r["fps"] for r in rows), default=0.0),
            "av_drift_ms": _drift_ms(rows), "frames_sent": last.get("frames_sent"),
            "frames_held": last.get("frames_held"), "dropped_windows": last.get("dropped_windows"),
            "error": lg.error, "rows": lg.rows})
    mem = [r["rss_mb"] for r in rss if r["rss_mb"] and r["t_s"] > warmup_s + 1e-6]
    growth = round((mem[-1] / mem[0] - 1) * 100, 2) if len(mem) >= 2 else None
    drifts = [abs(c["av_drift_ms"]) for c in per_client if c["av_drift_ms"] is not None]
    return {"sessions": len(logs), "sample_s": sample_s, "warmup_s": warmup_s,
            "memory_growth_pct": growth, "rss_mb_start": mem[0] if mem else None,
            "rss_mb_end": mem[-1] if mem else None, "rss": rss,
            "av_drift_ms_max_abs": max(drifts) if drifts else None,
            "fps_min": min(c["fps_mean"] for c in per_client),
            "fps_min_interval": min(c["fps_min_interval"] for c in per_client),
            "frames_held": sum(c["frames_held"] or 0 for c in per_client),
            "frames_sent": sum(c["frames_sent"] or 0 for c in per_client),
            "dropped_windows": sum(c["dropped_windows"] or 0 for c in per_client),
            "clients": per_client}


def plot(res: dict, path: Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(3, 1, figsize=(8, 8), sharex=True)
    ax[0].plot([r["t_s"] / 60 for r in res["rss"]], [r["rss_mb"] or np.nan for r in res["rss"]])
    ax[0].set_ylabel("server RSS (MB)")
    for i, c in enumerate(res["clients"]):
        t = [r["t_s"] / 60 for r in c["rows"]]
        ax[1].plot(t, [r["fps"] for r in c["rows"]], label=f"session {i + 1}")
        av = [(r["video_offset_ms"] - r["audio_offset_ms"]) if r["video_offset_ms"] is not None
              and r["audio_offset_ms"] is not None else np.nan for r in c["rows"]]
        ax[2].plot(t, np.asarray(av) - np.nanmedian(av[:3] or [0]), label=f"session {i + 1}")
    ax[1].axhline(24.5, color="grey", ls="--", lw=0.8)
    ax[1].set_ylabel("received fps")
    ax[1].legend()
    ax[2].set_ylabel("A/V offset change (ms)")
    ax[2].set_xlabel("minutes")
    fig.suptitle(f"soak: {res['sessions']} sessions, memory {res['memory_growth_pct']} %, "
                 f"drift {res['av_drift_ms_max_abs']} ms, min fps {res['fps_min']}")
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    ap.add_argument("--sessions", type=int, default=2, help="concurrent sessions (default 2)")
    ap.add_argument("--minutes", type=float, default=2.0, help="minutes after the warm-up (default 2)")
    ap.add_argument("--warmup-s", type=float, default=30.0, help="seconds left out of the numbers (default 30)")
    ap.add_argument("--sample-s", type=float, default=10.0, help="sampling interval, seconds (default 10)")
    ap.add_argument("--url", help="use a running server instead of starting one (no memory numbers)")
    ap.add_argument("--out", default="out/soak.json", help="JSON path; the PNG goes beside it")
    a = ap.parse_args(argv)
    if a.sessions < 1 or a.minutes <= 0 or a.sample_s <= 0:
        ap.error("--sessions >= 1, --minutes > 0 and --sample-s > 0")
    out = Path(a.out)
    proc, url = None, a.url
    if url is None:
        port = _free_port()
        proc = start_server(port, 60.0, out.with_suffix(".server.log"))
        url = f"http://127.0.0.1:{port}"
    print(f"soak: {a.sessions} sessions x {a.minutes:g} min (+{a.warmup_s:g} s warm-up) on {url}")
    try:
        res = asyncio.run(soak(url.rstrip("/"), proc.pid if proc else None, a.sessions, a.minutes * 60,
                               a.sample_s, a.warmup_s))
    finally:
        if proc is not None:
            proc.terminate()
            proc.wait(15)
    res.update({"minutes": a.minutes, "machine": {"cpus": os.cpu_count(), "loadavg": os.getloadavg()}})
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(res, indent=1))
    plot(res, out.with_suffix(".png"))
    print(f"memory growth {res['memory_growth_pct']} % ({res['rss_mb_start']} -> {res['rss_mb_end']} MB), "
          f"A/V drift max |{res['av_drift_ms_max_abs']}| ms, fps min {res['fps_min']} "
          f"(lowest {a.sample_s:g} s interval {res['fps_min_interval']}), held {res['frames_held']} of "
          f"{res['frames_sent']} frames, {res['dropped_windows']} windows dropped")
    print(f"wrote {out} and {out.with_suffix('.png')}")
    return 0 if all(c["error"] is None for c in res["clients"]) else 1


if __name__ == "__main__":
    sys.exit(main())
