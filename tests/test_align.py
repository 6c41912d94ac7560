"""engine.training.align: DTW phoneme timing of a "recording" whose true phoneme times are known
(espeak-ng's synthesis with another voice, after a silence), and pocketsphinx's word alignment."""
from __future__ import annotations

import numpy as np
import pytest
import soxr

from emote.engine.training import espeak
from emote.engine.training.align import AUDIT_SHIFTS_S, closure_dip, dtw_align, dtw_path, pocketsphinx_align
from emote.engine.training.visemes import is_bilabial

TEXT = "Please press the button, then put the map back."
LEAD_S = 0.5


def _recording(variant: str):
    syn = espeak.synthesize(TEXT, "en-us", rate_wpm=150, variant=variant)
    x = soxr.resample(syn.float_audio(), syn.sample_rate_hz, 16000).astype(np.float32)
    x = np.concatenate([np.zeros(int(LEAD_S * 16000), np.float32), x, np.zeros(3200, np.float32)])
    truth = [espeak.Phone(p.ipa, p.start_s + LEAD_S, p.end_s + LEAD_S) for p in syn.phonemes]
    return x, truth


@pytest.fixture(scope="module")
def recording():
    """16 kHz float32: LEAD_S of silence, then TEXT in a voice (m3) unlike the references
    (f1, f2, f4), and 0.2 s of silence; with its exact phonemes, shifted by LEAD_S."""
    return _recording("m3")


def test_dtw_path_follows_a_time_stretch():
    rng = np.random.default_rng(0)
    a = np.cumsum(rng.normal(size=(60, 4)), axis=0)
    b = np.repeat(a, 2, axis=0)                       # b is a at half speed
    path, cost = dtw_path(a, b)
    assert tuple(path[0]) == (0, 0) and tuple(path[-1]) == (59, 119)
    assert np.all(np.diff(path, axis=0) >= 0) and cost < 1e-6
    assert np.all(np.abs(path[:, 1] // 2 - path[:, 0]) == 0)


def test_leading_silence_is_a_pause_not_the_first_phoneme(recording):
    """The first phoneme starts at the speech, not at the file's first sample: before, it was
    stretched over the leading silence (a 'p' shut the lips for 0.5 s of nothing, and put its
    mid-time 250 ms early)."""
    x, truth = recording
    al = dtw_align(x, 16000, TEXT, "en-us", "f2")
    first, second = al.phonemes[0], al.phonemes[1]
    assert first.ipa == "_" and first.start_s == 0.0
    assert second.ipa == truth[0].ipa == "p"
    assert abs(second.start_s - truth[0].start_s) < 0.04, (second, truth[0])


def test_bilabial_mid_times_are_close_to_the_truth(recording):
    x, truth = recording
    al = dtw_align(x, 16000, TEXT, "en-us", "f2")
    got = [0.5 * (p.start_s + p.end_s) for p in al.phonemes if is_bilabial(p.ipa)]
    want = [0.5 * (p.start_s + p.end_s) for p in truth if is_bilabial(p.ipa)]
    assert len(got) == len(want) == 7
    err = np.abs(np.array(got) - np.array(want))
    assert np.median(err) < 0.03 and err.max() < 0.08, np.round(err * 1000)
    assert al.phonemes[-1].end_s == pytest.approx(len(x) / 16000)


def test_pocketsphinx_aligns_the_words_in_order():
    """(pocketsphinx gives up on some of espeak-ng's voices, m3 among them: f2 here.)"""
    pytest.importorskip("pocketsphinx")
    x, truth = _recording("f2")
    words = pocketsphinx_align(x, TEXT)
    assert words is not None and [w[2] for w in words][:3] == ["please", "press", "the"]
    starts = [w[0] for w in words]
    assert starts == sorted(starts) and abs(starts[0] - truth[0].start_s) < 0.1


def test_closure_dip_tells_exact_labels_from_shifted_ones(recording):
    """The audit's energy profile dips at exact bilabial labels (the lips shut the sound off) and
    not at labels moved by 150 ms, which is how the fillets-ng dialogue's DTW labels look."""
    x, truth = recording
    lab = [(p.ipa, p.start_s, p.end_s) for p in truth]
    d = closure_dip(x, 16000, lab)
    sh = np.array(AUDIT_SHIFTS_S)
    assert d.shape == (7, sh.size)
    prof = np.nanmedian(d, axis=0)
    at0, near = int(np.argmin(np.abs(sh))), np.abs(sh) <= 0.12 + 1e-9
    assert prof[at0] - np.nanmax(prof[near]) < -8.0, prof
    moved = closure_dip(x, 16000, [(p, s + 0.15, e + 0.15) for p, s, e in lab])
    mp = np.nanmedian(moved, axis=0)
    assert mp[at0] > prof[at0] + 8.0, (mp[at0], prof[at0])


def test_dtw_ceiling_scores_exact_labels_against_dtw_ones(tmp_path):
    """dtw_ceiling on a tiny espeak-ng build: every English utterance is aligned again; exact-label
    targets against DTW-label targets correlate well, but not perfectly (DTW errs by some ms)."""
    from emote.engine.training import build_data as B
    from emote.engine.training.align import dtw_ceiling
    cfg = B.BuildConfig(out=str(tmp_path / "d"), seed=1, hours_synthetic=0.01, languages=("en",), real=False,
                        workers=1, utts_per_shard=4, p_augment=0.0, p_sing=0.0, p_whisper=0.0, p_quiet=0.0)
    B.build(cfg, progress=False)
    r = dtw_ceiling(cfg.out, "espeak-ng", max_utts=3)
    assert r["utterances"] == 3
    assert 0.6 < r["corr"] < 0.999 and r["closure_recall"] > 0.6
    assert r["bilabial_error_median_ms"] is None or r["bilabial_error_median_ms"] < 40.0
    assert dtw_ceiling(cfg.out, "festival")["utterances"] == 0          # none in this build
