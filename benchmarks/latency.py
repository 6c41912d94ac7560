"""End-to-end latency of the live path on loopback, and how many real-time sessions fit.

    python -m emote.benchmarks.latency [--onsets 12] [--max-sessions 4] [--out out/latency.json]

1. Starts ``emote serve`` (the real engine, default portrait) in its own process, ICE on 127.0.0.1.
2. Latency: the Python client sends syllables (espeak-ng) separated by 1.2 s of silence in real
   time. For each sound onset (the envelope rising out of silence), the latency is the arrival
   time of the first received frame whose mouth opens (face landmarker: inner-lip aperture above
   its silent level by 30 % of that syllable's peak opening) minus the time the onset was sent.
   Both clocks are this machine's CLOCK_MONOTONIC. p50/p95 over the onsets, with the server's
   per-stage medians (its /ws stats) for the breakdown.
3. Capacity: 1, 2, ... N clients at once, 8 s each; a count is sustained when every client
   receives >= 24 fps and the server held (repeated) < 2 % of the frames. The clients share this
   machine with the server, so they do only what the measurement needs, not what a real remote
   client would do on its own machine: their audio is Opus-encoded once before the run
   (``FileAudioTrack(pre_encoded=True)``) and the video they receive is counted frame by frame
   (complete frames, by arrival time) but not decoded (``ClientSettings(decode_video=False)``).
   The latency run (2.) decodes: it needs the pixels, and the landmarker looks only at the frames
   around each onset.
Prints a summary and writes JSON.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from emote.clients.client import ClientSettings, FileAudioTrack, read_audio_48k, run_client

RATE = 48000
SYLLABLES = ("pa", "ma", "ba", "da", "ta", "ka", "na", "la", "ga", "wa", "ya", "ha")
#: Syllables whose sound starts while the mouth is still shut or nearly so: the labials (m, b, p, w:
#: lips closed or rounded shut) and the palatal glide y (/j/: the jaw stays high, the tongue against
#: the palate, until the vowel). A speaker's mouth opens 50-100 ms after such an acoustic onset, so
#: their onset-to-opening time is articulation, not latency (a motion model that articulates them
#: correctly is late on them by design: measured engine responses +50..+140 ms, against -50..+45 ms
#: for d, t, k, g, n, l, h). The headline numbers leave them out; the JSON has every syllable.
CLOSED_ONSETS = frozenset({"pa", "ma", "ba", "wa", "ya"})


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def make_onsets(n: int, gap_s: float = 1.2, lead_s: float = 1.0) -> tuple[np.ndarray, list[int]]:
    """Syllables with silences between: float32 mono 48 kHz, and each onset's sample index."""
    parts, onsets, pos = [np.zeros(int(lead_s * RATE), np.float32)], [], int(lead_s * RATE)
    with tempfile.TemporaryDirectory() as d:
        for i in range(n):
            p = f"{d}/{i}.wav"
            subprocess.run(["espeak-ng", "-v", "en", "-w", p, SYLLABLES[i % len(SYLLABLES)]], check=True)
            x = read_audio_48k(p)
            env = np.abs(x) > 0.02
            x = x[int(np.argmax(env)):]                     # start at the sound itself
            onsets.append(pos)
            parts += [0.8 * x, np.zeros(int(gap_s * RATE), np.float32)]
            pos += len(x) + int(gap_s * RATE)
    return np.concatenate(parts), onsets


def start_server(port: int, margin_ms: float, log_path: Path, generator: str | None = None) -> subprocess.Popen:
    """`emote serve` in its own process, its log (-v) in ``log_path``."""
    cmd = [sys.executable, "-m", "emote.clients.serve_cmd", "serve", "--port", str(port), "-v",
           "--ice-address", "127.0.0.1", "--max-sessions", "8", "--margin-ms", str(margin_ms)]
    if generator:
        cmd += ["--generator", generator]
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with open(log_path, "w") as log:
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, text=True)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return proc
        if proc.poll() is not None:
            raise RuntimeError("emote serve exited at start")
        time.sleep(0.2)
    proc.kill()
    raise RuntimeError("emote serve did not start within 120 s")


def onset_latencies(rec, onsets: list[int]) -> list[tuple[float, float, float, int]]:
    """Per measured onset, seconds: (sending the onset -> arrival of the first frame whose mouth opens,
    that frame's content time - the onset's (the engine's own response; negative when the
    lookahead opens the mouth early), that frame's arrival - its content time (the live path)),
    and the onset's index in ``onsets``."""
    from emote.engine.landmarks import inner_lip_aperture, shared_landmarker
    lm = shared_landmarker()
    content = np.array([p / 90000 for p, _, _ in rec.video])
    arrival = np.array([a for _, a, _ in rec.video])
    near = np.zeros(len(content), bool)                   # only frames an onset below looks at
    for s in onsets:
        near |= (content > s / RATE - 0.6) & (content < s / RATE + 0.6)
    ap = np.full(len(content), np.nan)
    for i in np.flatnonzero(near):
        faces = lm.detect(rec.video[i][2])
        ap[i] = inner_lip_aperture(faces[0].points) if faces else np.nan
    out = []
    for k, s in enumerate(onsets):
        t = s / RATE
        before = ap[(content > t - 0.6) & (content < t - 0.2)]
        after = (content >= t - 0.2) & (content < t + 0.6)
        if not len(before) or not after.any() or np.isnan(before).all():
            continue
        base, peak = np.nanmedian(before), np.nanmax(ap[after])
        if peak - base < 0.02:
            continue                                      # this syllable did not open the mouth
        i = np.flatnonzero(after & (ap > base + 0.3 * (peak - base)))[0]
        out.append((float(arrival[i] - (rec.sent_t0 + t)),     # end to end
                    float(content[i] - t),                      # the engine: mouth vs sound
                    float(arrival[i] - rec.sent_t0 - content[i]),   # the path: content -> arrival
                    k))
    return out


async def measure_latency(url: str, n_onsets: int) -> dict:
    audio, onsets = make_onsets(n_onsets)
    rec = await run_client(ClientSettings(url, seconds=len(audio) / RATE + 1.0,
                                          ice_addresses=("127.0.0.1",)), FileAudioTrack(audio))
    rows = onset_latencies(rec, onsets)
    lat = [r[0] for r in rows]
    open_onset = [r[0] for r in rows if SYLLABLES[r[3] % len(SYLLABLES)] not in CLOSED_ONSETS]
    stats = rec.stats[-1] if rec.stats else {}
    pct = lambda xs, q: round(float(np.percentile(xs, q)) * 1000, 1)  # noqa: E731
    res = {"onsets": len(onsets), "measured": len(lat), "latency_ms": [round(x * 1000, 1) for x in lat],
           "syllables": [SYLLABLES[r[3] % len(SYLLABLES)] for r in rows],
           "engine_response_ms": [round(r[1] * 1000, 1) for r in rows],
           "engine_response_ms_p50": pct([r[1] for r in rows], 50) if rows else None,
           "path_ms_p50": pct([r[2] for r in rows], 50) if rows else None,
           "path_ms_p95": pct([r[2] for r in rows], 95) if rows else None,
           "frames_held": stats.get("frames_held"), "frames_sent": stats.get("frames_sent"),
           "dropped_windows": stats.get("dropped_windows"), "padded_s": stats.get("padded_s"),
           "server_delay_ms": rec.delay_ms, "server_stages_ms": stats.get("stages_ms", {}),
           "fps_received": round(rec.video_fps(), 2)}
    if lat:
        res["p50_ms_all_syllables"] = round(float(np.percentile(lat, 50)) * 1000, 1)
        res["p95_ms_all_syllables"] = round(float(np.percentile(lat, 95)) * 1000, 1)
    if open_onset:
        res["p50_ms"] = round(float(np.percentile(open_onset, 50)) * 1000, 1)
        res["p95_ms"] = round(float(np.percentile(open_onset, 95)) * 1000, 1)
        res["open_onsets"] = len(open_onset)
    return res


async def measure_capacity(url: str, max_sessions: int, seconds: float = 8.0) -> dict:
    audio, _ = make_onsets(6)
    rows, sustained = [], 0
    for n in range(1, max_sessions + 1):
        recs = await asyncio.gather(*(run_client(
            ClientSettings(url, seconds=seconds, ice_addresses=("127.0.0.1",), keep_frames=False,
                           decode_video=False),
            FileAudioTrack(audio, pre_encoded=True)) for _ in range(n)))
        fps = [r.video_fps() for r in recs]
        held = [(r.stats[-1]["frames_held"] / max(1, r.stats[-1]["frames_sent"])) if r.stats else 1.0
                for r in recs]
        ok = min(fps) >= 24.0 and max(held) < 0.02
        rows.append({"sessions": n, "fps_min": round(min(fps), 2), "held_max": round(max(held), 4), "ok": ok})
        print(f"  {n} sessions: min fps {min(fps):.1f}, held {max(held) * 100:.1f} %  {'ok' if ok else 'NO'}")
        if not ok:
            break
        sustained = n
        await asyncio.sleep(2.0)                          # let the server free the sessions
    return {"sustained_sessions": sustained, "runs": rows}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--onsets", type=int, default=12)
    ap.add_argument("--max-sessions", type=int, default=4)
    ap.add_argument("--out", default="out/latency.json")
    ap.add_argument("--url", help="use a running server instead of starting one")
    ap.add_argument("--margin-ms", type=float, default=50.0, help="the server's --margin-ms")
    ap.add_argument("--skip-capacity", action="store_true")
    ap.add_argument("--generator", default=None, help="the server's motion generator (default: the engine's default)")
    a = ap.parse_args(argv)
    proc = None
    url = a.url
    if url is None:
        port = _free_port()
        proc = start_server(port, a.margin_ms, Path(a.out).with_suffix(".server.log"), a.generator)
        url = f"http://127.0.0.1:{port}"
    try:
        print(f"latency over {a.onsets} onsets ...")
        lat = asyncio.run(measure_latency(url, a.onsets))
        print(f"  end to end p50 {lat.get('p50_ms')} ms, p95 {lat.get('p95_ms')} ms over {lat.get('open_onsets')} "
              f"onsets that open the mouth at once (all {lat['measured']}/{lat['onsets']} syllables, with m/b/p/w/y: "
              f"p50 {lat.get('p50_ms_all_syllables')}, p95 {lat.get('p95_ms_all_syllables')} ms); "
              f"server delay {lat['server_delay_ms']} ms")
        print(f"  = engine response (mouth vs sound, content time) p50 {lat['engine_response_ms_p50']} ms"
              f" + live path (content -> arrival) p50 {lat['path_ms_p50']} / p95 {lat['path_ms_p95']} ms")
        print(f"  server stages (median ms): {lat['server_stages_ms']}; held {lat['frames_held']}"
              f" of {lat['frames_sent']} frames, {lat['dropped_windows']} windows dropped,"
              f" {lat['padded_s']} s of silence filled")
        cap = {}
        if not a.skip_capacity:
            print("capacity ...")
            cap = asyncio.run(measure_capacity(url, a.max_sessions))
            print(f"  sustained real-time 25 fps sessions: {cap['sustained_sessions']}")
    finally:
        if proc is not None:
            proc.terminate()
            proc.wait(10)
    result = {"machine": {"cpus": os.cpu_count(), "loadavg_1min_at_end": os.getloadavg()[0]},
              "latency": lat, "capacity": cap, "size_px": 512, "fps": 25, "margin_ms": a.margin_ms,
              "generator": a.generator or "default"}
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    Path(a.out).write_text(json.dumps(result, indent=2))
    print(f"wrote {a.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
