"""The real pipeline end to end through WebRTC, with the Python client (and the `emote client`
command): frame rate, mouth follows speech (face landmarker on received frames), the voice
comes back delayed, A/V offset, two portraits at once never mix, MP4 recording, --mic error."""
from __future__ import annotations

import asyncio
import subprocess
import sys
import time

import av
import numpy as np
import pytest

from emote.clients.client import ClientSettings, FileAudioTrack, run_client
from emote.engine.landmarks import inner_lip_aperture, shared_landmarker
from emote.engine.resources import default_portrait_path
from portraits import grace_hopper_path, min_live_fps
from streaming_fakes import LOOPBACK, best_lag_s, envelope, speech_with_pauses

pytestmark = pytest.mark.skipif(__import__("shutil").which("espeak-ng") is None, reason="needs espeak-ng")


def aperture(rgb: np.ndarray) -> float:
    faces = shared_landmarker().detect(rgb)
    return inner_lip_aperture(faces[0].points) if faces else np.nan


@pytest.fixture(scope="module")
def speech(tmp_path_factory):
    path = str(tmp_path_factory.mktemp("speech") / "speech.wav")
    return path, speech_with_pauses(path)


TOKEN = "client-test-token"


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """`emote serve` in its own process (engine processes too), two portraits, a token."""
    import socket
    d = tmp_path_factory.mktemp("server")
    hopper = d / "hopper.jpg"
    hopper.write_bytes(grace_hopper_path().read_bytes())
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    log = open(d / "serve.log", "w")
    proc = subprocess.Popen(
        [sys.executable, "-m", "emote.clients.serve_cmd", "serve", "--port", str(port), "-v",
         "--ice-address", "127.0.0.1", "--token", TOKEN, "--cache-dir", str(d / "avatars"),
         "--portrait", str(default_portrait_path()), "--portrait", str(hopper)],
        stdout=log, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 120
    while True:
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                break
        assert proc.poll() is None and time.monotonic() < deadline, (d / "serve.log").read_text()
        time.sleep(0.2)
    yield f"http://127.0.0.1:{port}", proc.pid
    proc.terminate()
    proc.wait(10)
    log.close()


def _cfg(url: str, seconds: float, **kw) -> ClientSettings:
    return ClientSettings(url, token=TOKEN, seconds=seconds, ice_addresses=LOOPBACK, **kw)


def _analyse(rec, sent: np.ndarray) -> dict:
    t = np.array([p / 90000 for p, _, _ in rec.video])
    m = np.array([aperture(f) for _, _, f in rec.video])
    ok = ~np.isnan(m)
    audio = rec.audio_array()
    env = envelope(audio, 48000, 0.01)
    grid = np.arange(len(env)) * 0.01 + 0.005
    idx = np.clip(np.searchsorted(t[ok], grid, "right") - 1, 0, ok.sum() - 1)
    mouth = m[ok][idx]                                        # each frame holds for 40 ms
    speaking = np.convolve(env > 0.02, np.ones(15), "same") > 0   # speech, 70 ms either side
    silent = np.convolve(env > 0.005, np.ones(41), "same") == 0   # silence, 200 ms from speech
    sent_env = envelope(sent, 48000, 0.01)
    n = min(len(sent_env), len(env))
    # wall-clock delay of the returned voice: arrival of content c minus the time c was sent
    arr = np.array([a - p / 48000 for p, a, _ in rec.audio]) - rec.sent_t0
    return {"detected": float(ok.mean()), "lag_s": best_lag_s(env, mouth, 0.01, 0.3),
            "mouth_speaking": float(np.median(mouth[speaking[:len(mouth)]])),
            "mouth_silent": float(np.median(mouth[silent[:len(mouth)]])),
            "mouth_silent_p90": float(np.percentile(mouth[silent[:len(mouth)]], 90)),
            "voice_lag_s": (vl := best_lag_s(sent_env[:n], env[:n], 0.01, 0.2)),
            "voice_corr": float(np.corrcoef(sent_env[:n - 20], env[round(vl * 100):n - 20 + round(vl * 100)])[0, 1]),
            "voice_delay_s": float(np.median(arr)), "fps": rec.video_fps(),
            "seconds": (rec.video[-1][1] - rec.video[0][1]) if rec.video else 0.0}


def _children(pid: int) -> list[int]:
    with open(f"/proc/{pid}/task/{pid}/children") as f:
        return [int(x) for x in f.read().split()]


def test_python_client_real_pipeline(speech, server):
    server, pid = server
    wav, sent = speech
    rec = asyncio.run(run_client(_cfg(server, 10.0), FileAudioTrack(sent)))
    time.sleep(1.5)
    assert len(_children(pid)) == 1                    # the session's engine process is gone
    res = _analyse(rec, sent)
    print(res, rec.stats[-1] if rec.stats else None)
    assert res["fps"] >= min_live_fps() and res["seconds"] >= 8.0, res
    assert res["detected"] > 0.95
    assert res["mouth_speaking"] > res["mouth_silent"] + 0.05, res         # moves with speech
    assert res["mouth_silent_p90"] < res["mouth_speaking"], res             # rests in silences
    assert abs(res["lag_s"]) <= 0.04, res                                   # A/V offset
    # the same voice; in content time only the two Opus encoders' lookahead (2 x 6.5 ms) apart
    assert res["voice_corr"] > 0.9 and 0 <= res["voice_lag_s"] <= 0.03, res
    # the voice comes back the server's delay later (its pts include the 6 ms of resampler
    # hold-back the server starts both streams with, hence the 20 ms below)
    assert rec.delay_ms / 1000 - 0.04 <= res["voice_delay_s"] <= rec.delay_ms / 1000 + 0.1, res   # +-40 ms: the A/V tolerance


def test_two_portraits_at_once_never_mix(speech, server):
    server, _ = server
    wav, sent = speech

    async def go():
        return await asyncio.gather(*(
            run_client(_cfg(server, 9.0, portrait=name), FileAudioTrack(sent * gain))
            for name, gain in (("portrait_astronaut", 1.0), ("hopper", 0.5))))
    a, h = asyncio.run(go())
    ref_a, ref_h = a.video[0][2].astype(np.float32), h.video[0][2].astype(np.float32)
    for rec, own, other in ((a, ref_a, ref_h), (h, ref_h, ref_a)):
        assert rec.video_fps() >= min_live_fps(), rec.video_fps()
        for _, _, f in rec.video[::10]:
            f = f.astype(np.float32)
            assert np.abs(f - own).mean() < 0.5 * np.abs(f - other).mean()
    ra, rh = np.abs(a.audio_array()).max(), np.abs(h.audio_array()).max()
    assert 1.6 < ra / rh < 2.4                                  # each got its own voice back


def test_emote_client_command_writes_an_mp4_and_mic_errors_are_clear(speech, server, tmp_path):
    server, _ = server
    wav, _ = speech
    out = str(tmp_path / "received.mp4")
    cmd = [sys.executable, "-m", "emote.clients.serve_cmd", "client", server, "--ice-address", "127.0.0.1"]
    p = subprocess.run(cmd + ["--audio", wav, "--out", out, "--token", TOKEN, "--seconds", "4"],
                       capture_output=True, text=True, timeout=60)
    q = subprocess.run(cmd + ["--mic"], capture_output=True, text=True, timeout=60)
    rc, text, mic_rc, mic_err = p.returncode, p.stdout + p.stderr, q.returncode, q.stderr
    assert rc == 0, text
    with av.open(out) as c:
        v, a = c.streams.video[0], c.streams.audio[0]
        assert (v.codec_context.name, a.codec_context.name) == ("h264", "aac")
        assert (v.width, v.height) == (512, 512)
        frames = sum(1 for _ in c.decode(video=0))
    assert frames >= 3.5 * 24
    assert mic_rc == 2 and "microphone" in mic_err and "Traceback" not in mic_err, mic_err


# -- what the benchmarks' clients skip (no real pipeline needed: the fake engine) ----------------
TONE = (0.3 * np.sin(np.arange(48000 * 2) * 0.06)).astype(np.float32)


def test_client_settings_refuse_an_unknown_codec_and_frames_without_decoding():
    from emote.engine.exceptions import ConfigError
    with pytest.raises(ConfigError, match="video_codec"):
        ClientSettings("http://127.0.0.1:1", video_codec="AV1")
    with pytest.raises(ConfigError, match="decode_video"):
        ClientSettings("http://127.0.0.1:1", keep_frames=True, decode_video=False)


def test_pre_encoded_audio_is_what_aiortc_would_send_and_then_silence():
    from aiortc.codecs.opus import OpusEncoder
    live_track, pre = FileAudioTrack(TONE[:9600]), FileAudioTrack(TONE[:9600], pre_encoded=True)
    enc = OpusEncoder()
    live = [enc.encode(live_track._frame(n))[0] for n in range(13)]

    async def take(n):
        out = [await pre.recv() for _ in range(n)]
        pre.stop()
        return out
    packets = asyncio.run(take(16))
    assert [bytes(p) for p in packets[:13]] == [b for payloads in live for b in payloads]
    assert [p.pts for p in packets] == [960 * n for n in range(16)]
    assert bytes(packets[15]) == bytes(packets[12])             # past the end: encoded silence


def test_a_benchmark_client_counts_frames_without_decoding_in_the_codec_it_asks_for(monkeypatch):
    import aiortc.rtcrtpreceiver as receiver
    from streaming_fakes import LOOPBACK, start_server
    decoders = []
    real_get_decoder = receiver.get_decoder
    monkeypatch.setattr(receiver, "get_decoder", lambda codec: decoders.append(codec.name) or real_get_decoder(codec))

    async def go(codec):
        runner, url, app = await start_server()
        try:
            task = asyncio.create_task(run_client(
                ClientSettings(url, seconds=2.5, ice_addresses=LOOPBACK, keep_frames=False,
                               decode_video=False, video_codec=codec),
                FileAudioTrack(TONE, pre_encoded=True)))
            await asyncio.sleep(1.5)
            (session,) = app.sessions.values()
            sent = next(t for t in session.pc.getTransceivers() if t.kind == "video")._codecs[0].name
            return await task, sent
        finally:
            await runner.cleanup()
    for codec in ("H264", "VP8"):
        decoders.clear()
        rec, sent_codec = asyncio.run(go(codec))
        pts = [p for p, _, f in rec.video]
        assert sent_codec == codec
        assert len(pts) >= 40 and all(f is None for _, _, f in rec.video)
        assert np.all(np.diff(pts) > 0) and not np.any(np.array(pts) % 3600)   # in order, on the frame clock
        assert "opus" in decoders and codec not in decoders     # the voice is decoded, the video not

