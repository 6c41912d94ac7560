"""Every portrait style animates: photo, old black-and-white photo, paintings, drawing, cartoon, 3D render.

For each style (images in tests/styles.py): prepare at 256 px, record which detection path found
the face, render 1 s of silence + ~2 s of espeak-ng speech through the real pipeline, re-detect
the landmarks with the real landmarker on every 2nd frame, and check that (a) the face is found
again, (b) its layout stays the reference's and (c) the mouth moves with the speech.
A strip of one mouth-open frame per style is written by the last test (to $EMOTE_STYLES_STRIP
when that is set).
"""
from __future__ import annotations

import os

import cv2
import numpy as np
import pytest

import styles
from emote.engine import landmarks as L
from emote.engine.avatar import AvatarSettings, detect_with_fallbacks, prepare
from emote.engine.exceptions import FaceNotFoundError
from emote.engine.pipeline import PipelineSettings, PortraitPipeline
from speech import have_espeak, make_speech, speech_envelope

SR, FPS, SIZE = 16000, 25, 256
LEAD_S = 1.0                                   # silence before the speech
TEXT = "Pam made a big pie for papa."     # ~2 s at 150 wpm, rich in lip closures
NOSE = (1, 2, 4, 5, 6, 98, 168, 195, 197, 327)
LAYOUT = sorted(set(L.EYE_R_UPPER + L.EYE_R_LOWER + L.EYE_L_UPPER + L.EYE_L_LOWER + NOSE + L.FACE_OVAL))

no_wesnoth = pytest.mark.skipif(not styles.have_wesnoth(), reason="apt-get install wesnoth-1.16-data")
no_flare = pytest.mark.skipif(not styles.have_flare(), reason="apt-get install flare-game")
no_freedroid = pytest.mark.skipif(not styles.have_freedroid(), reason="apt-get install freedroidrpg-data")
# The grey pencil sketch: BlazeFace (the landmarker's first stage) gives no box on the face in the
# whole 600 x 512 sketch (best score 0.30, on the torso); avatar._variants' "smoothed" copy (a median
# blur that removes the hatching) finds it. See docs/styles.md.
colour_sketch_jitters = pytest.mark.xfail(raises=AssertionError, strict=False,
                                          reason="the landmarker jitters on colour-pencil hatching (layout "
                                                 "0.044 IOD, aperture std 0.19 in silence); stable on a "
                                                 "3 px median copy (0.027 IOD, 0.002)")

# (loader, generator, smoothed): smoothed simulates the fix proposed for sketches (a median-smoothed
# detection variant): the source's landmarks are found on a 9 px median copy and given to prepare as a
# landmarks file (the user's --landmarks workaround), frames are re-detected on a 7 px median copy.
STYLES = [
    pytest.param(styles.photo, "baseline", False, id="photo"),
    pytest.param(styles.photo, "backbone", False, id="photo-backbone"),
    pytest.param(styles.old_bw, "baseline", False, id="old_bw"),
    *[pytest.param(lambda n=n: styles.painting(n), "baseline", False, marks=no_wesnoth,
                   id="painting-" + n.split("/")[-1][:-4]) for n in styles.WESNOTH_PORTRAITS],
    pytest.param(styles.drawing, "baseline", False, id="drawing"),
    pytest.param(styles.drawing, "baseline", True, id="drawing-smoothed"),
    pytest.param(lambda: styles.drawing(colour=True), "baseline", False, marks=colour_sketch_jitters,
                 id="drawing-colour"),
    pytest.param(styles.cartoon, "baseline", False, id="cartoon"),
    pytest.param(styles.digital_painting, "baseline", False, marks=no_flare, id="digital_painting"),
    *[pytest.param(lambda n=n: styles.render_3d(n), "baseline", False, marks=no_freedroid, id="3d_render-" + n)
      for n in styles.FREEDROID_PORTRAITS[:2]],
]

RESULTS: dict[str, dict] = {}                  # style id -> numbers and a mouth-open frame, for the strip


@pytest.fixture(scope="module")
def speech(tmp_path_factory):
    """(samples, first speech frame): 1 s of silence, the sentence, 0.3 s of silence; float32 16 kHz."""
    if not have_espeak():
        pytest.skip("espeak-ng is not installed")
    from emote.engine.audio import load_audio

    raw = load_audio(make_speech(TEXT, "en", tmp_path_factory.mktemp("speech") / "en.wav"))
    x = np.concatenate([np.zeros(int(LEAD_S * SR), np.float32), raw, np.zeros(int(0.3 * SR), np.float32)])
    return x, int(LEAD_S * FPS)


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    return tmp_path_factory.mktemp("avatars")


def _render(avatar, samples, generator: str) -> list[np.ndarray]:
    """All frames, (S, S, 3) uint8 each, for the samples pushed in 0.2 s blocks."""
    pipe = PortraitPipeline(avatar, PipelineSettings(size_px=SIZE, generator=generator, seed=1))
    frames = []
    for i in range(0, len(samples), SR // 5):
        pipe.push(samples[i:i + SR // 5])
        frames += [f.rgb for f in pipe.pull()]
    frames += [f.rgb for f in pipe.finish()]
    return frames


def _layout_error(points: np.ndarray, ref: np.ndarray, iod_px: float) -> float:
    """Mean distance of the eye/nose/oval landmarks to the reference's after removing translation
    and scale (least squares), as a fraction of the reference's inter-ocular distance."""
    p = points[LAYOUT, :2].astype(np.float64)
    r = ref[LAYOUT, :2].astype(np.float64)
    p, r = p - p.mean(0), r - r.mean(0)
    s = float((p * r).sum() / (p * p).sum())
    return float(np.linalg.norm(s * p - r, axis=1).mean() / iod_px)


def _detect(rgb: np.ndarray, lm, median_px: int) -> tuple[np.ndarray | None, str]:
    """(478, 3) landmarks of the largest face or None, and the detection path that found it."""
    faces, path = detect_with_fallbacks(cv2.medianBlur(rgb, median_px) if median_px else rgb, lm)
    return (faces[0].points if faces else None), path


def _measure(frames: list[np.ndarray], ref: np.ndarray, iod_px: float, lm, median_px: int):
    """Every 2nd frame: (frame indices, inner-lip aperture, layout error); NaN where no face is found.

    ref: (478, 3) landmarks of the prepared portrait found the same way as the frames' (so the
    layout error measures the rendering, not the detector's bias on this style)."""
    idx = np.arange(0, len(frames), 2)
    ap = np.full(len(idx), np.nan)
    err = np.full(len(idx), np.nan)
    for k, i in enumerate(idx):
        pts, _ = _detect(frames[i], lm, median_px)
        if pts is not None:
            ap[k] = L.inner_lip_aperture(pts)
            err[k] = _layout_error(pts, ref, iod_px)
    return idx, ap, err


def _landmarks_file(image: np.ndarray, median_px: int, path) -> str:
    """What a user does when prepare finds no face (--landmarks FILE): landmarks found on a
    median-smoothed copy (median_px odd), saved as a (478, 3) float32 .npy in the source's pixels."""
    faces = L.shared_landmarker().detect(cv2.medianBlur(image, median_px))
    assert faces, f"no face even on the {median_px} px median-smoothed copy"
    np.save(path, faces[0].points)
    return str(path)


@pytest.mark.parametrize("load,generator,smoothed", STYLES)
def test_style_animates(request, load, generator, smoothed, speech, cache):
    style = request.node.callspec.id
    samples, lead = speech
    source = load()
    lm_file = _landmarks_file(source, 9, cache / f"{style}.npy") if smoothed else None
    avatar = prepare(source, AvatarSettings(size_px=SIZE, landmarks_file=lm_file), cache_dir=cache)
    lm = L.shared_landmarker()
    # a face the engine found only on its median-smoothed copy is measured on smoothed frames too
    median_px = 7 if smoothed or "landmarks: smoothed" in avatar.notes else 0
    ref, found_by = _detect(avatar.image, lm, median_px)          # which path finds the prepared face
    assert ref is not None, f"{style}: no face on the prepared {SIZE} px portrait"
    source_path = next((n for n in avatar.notes if n.startswith("landmarks: ")), "?")[len("landmarks: "):]
    frames = _render(avatar, samples, generator)
    idx, ap, err = _measure(frames, ref, avatar.iod_px, lm, median_px)

    found = float(np.mean(~np.isnan(ap)))
    env = speech_envelope(samples, SR, FPS)[idx]
    silent = (idx >= 3) & (idx < lead - 5)     # the silent second, before the generator anticipates speech
    talking = (idx >= lead) & (env > 0.1)
    ok = ~np.isnan(ap)
    std_silent = float(np.nanstd(ap[silent]))
    std_talk = float(np.nanstd(ap[talking]))
    r_env = float(np.corrcoef(ap[ok], env[ok])[0, 1])
    layout = float(np.nanmean(err))
    mouth_open = int(idx[np.nanargmax(np.where(talking, ap, np.nan))])
    RESULTS[style] = dict(source=source_path, final=found_by, found=found, layout=layout, std_talk=std_talk,
                          std_silent=std_silent, r_env=r_env, iod=avatar.iod_px, frame=frames[mouth_open])
    print(f"{style}: source {source_path}, final {found_by}, found {found:.0%}, layout {layout:.3f} IOD, "
          f"aperture std {std_talk:.4f} talking / {std_silent:.4f} silent, r_env {r_env:.2f}, "
          f"IOD {avatar.iod_px:.0f} px")

    assert found >= 0.9, f"{style}: face re-detected on only {found:.0%} of the checked frames"
    assert layout < 0.04, f"{style}: landmark layout moved {layout:.3f} IOD from the reference"
    assert std_talk > 0.01, f"{style}: the mouth barely moves in speech (aperture std {std_talk:.4f})"
    assert std_talk > 2 * std_silent or r_env > 0.3, (
        f"{style}: mouth does not follow speech (std {std_talk:.4f} vs {std_silent:.4f} silent, r {r_env:.2f})")


def _label(tile: np.ndarray, text: str) -> np.ndarray:
    out = tile.copy()
    cv2.rectangle(out, (0, 0), (out.shape[1], 18), (0, 0, 0), -1)
    cv2.putText(out, text, (4, 13), cv2.FONT_HERSHEY_SIMPLEX, 0.42, (255, 255, 255), 1, cv2.LINE_AA)
    return out


def test_strip(tmp_path):
    """One mouth-open frame per style that ran, side by side, labelled: (256, 256 * n, 3) RGB PNG."""
    if not RESULTS:
        pytest.skip("no style ran in this session (run the whole file)")
    tiles = [_label(r["frame"], s) for s, r in RESULTS.items()]
    strip = np.hstack(tiles)
    assert strip.shape == (SIZE, SIZE * len(tiles), 3)
    targets = [tmp_path / "styles.png"] + ([os.environ["EMOTE_STYLES_STRIP"]]
                                            if os.environ.get("EMOTE_STYLES_STRIP") else [])
    for t in targets:
        assert cv2.imwrite(str(t), cv2.cvtColor(strip, cv2.COLOR_RGB2BGR))
    assert cv2.imread(str(targets[0])).shape == strip.shape
