"""Re-create the embedded assets in engine/assets/ (run from the repository root; needs scikit-image and espeak-ng).

    .venv/bin/python scripts/make_assets.py

portrait_astronaut.jpg: skimage.data.astronaut() (NASA, public domain), a square crop around the head
(the face is about 43 % of the width, the hair inside with a margin), Lanczos-resized to 512x512 with a
light unsharp mask, JPEG quality 92.
demo_speech_en.ogg: espeak-ng (voice en-us, 175 words/min) reading DEMO_TEXT, resampled to 48 kHz mono
and encoded with Opus at 32 kbit/s.
"""
from __future__ import annotations

import subprocess
import sys
import tempfile
from fractions import Fraction
from pathlib import Path

import av
import cv2
import numpy as np

ASSETS = Path(__file__).resolve().parent.parent / "engine" / "assets"
DEMO_TEXT = ("Hello! I am a photo that speaks. Bring me your voice, "
             "and maybe, by magic, my mouth moves with you.")


def portrait(out: Path) -> None:
    from skimage import data
    img = data.astronaut()
    x0, y0, side = 120, 0, 215
    up = cv2.resize(img[y0:y0 + side, x0:x0 + side], (512, 512), interpolation=cv2.INTER_LANCZOS4)
    sharp = cv2.addWeighted(up, 1.35, cv2.GaussianBlur(up, (0, 0), 2.0), -0.35, 0)
    cv2.imwrite(str(out), cv2.cvtColor(sharp, cv2.COLOR_RGB2BGR),
                [cv2.IMWRITE_JPEG_QUALITY, 92, cv2.IMWRITE_JPEG_OPTIMIZE, 1])


def speech(out: Path) -> None:
    with tempfile.TemporaryDirectory() as td:
        wav = Path(td) / "speech.wav"
        subprocess.run(["espeak-ng", "-v", "en-us", "-s", "175", "-w", str(wav), DEMO_TEXT], check=True)
        with av.open(str(wav)) as src:
            pcm = np.concatenate([f.to_ndarray().reshape(-1) for f in src.decode(audio=0)])
            rate = src.streams.audio[0].codec_context.sample_rate
    # trim leading/trailing silence to 0.15 s
    loud = np.flatnonzero(np.abs(pcm.astype(np.float32)) > 300)
    pad = int(0.15 * rate)
    pcm = pcm[max(0, loud[0] - pad): loud[-1] + pad]
    with av.open(str(out), "w", format="ogg") as dst:
        st = dst.add_stream("libopus", rate=48000, layout="mono")
        st.bit_rate = 32000
        res = av.AudioResampler(format="s16", layout="mono", rate=48000)
        fr = av.AudioFrame.from_ndarray(pcm.reshape(1, -1).astype(np.int16), format="s16", layout="mono")
        fr.sample_rate, fr.pts, fr.time_base = rate, 0, Fraction(1, rate)
        for f in res.resample(fr) + res.resample(None):
            dst.mux(st.encode(f))
        dst.mux(st.encode(None))


def main() -> int:
    ASSETS.mkdir(parents=True, exist_ok=True)
    portrait(ASSETS / "portrait_astronaut.jpg")
    speech(ASSETS / "demo_speech_en.ogg")
    for p in sorted(ASSETS.iterdir()):
        print(f"{p.name}: {p.stat().st_size} bytes")
    return 0


if __name__ == "__main__":
    sys.exit(main())
