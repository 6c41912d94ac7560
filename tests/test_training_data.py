"""engine.training: the motion data engine (espeak-ng phoneme events, targets, variants, shards, build)."""
from __future__ import annotations

import json

import numpy as np
import pytest

from emote.engine import motion as M
from emote.engine.audio import FeatureStream

espeak = pytest.importorskip("emote.engine.training.espeak")
if not espeak.available():
    pytest.skip("libespeak-ng is not loadable", allow_module_level=True)

from emote.engine.training import build_data as B          # noqa: E402
from emote.engine.training import targets as TG             # noqa: E402
from emote.engine.training import visemes as V              # noqa: E402
from emote.engine.training.shards import open_dataset        # noqa: E402

C = M.INDEX


def _energy_db(x: np.ndarray, sr: int, hop_s: float = 0.0025, win_s: float = 0.005) -> tuple[np.ndarray, np.ndarray]:
    """Short-time energy (dB) and the window centres (s)."""
    hop, win = int(hop_s * sr), int(win_s * sr)
    n = max(0, (x.size - win) // hop + 1)
    idx = np.arange(win)[None, :] + hop * np.arange(n)[:, None]
    e = 10 * np.log10((x[idx].astype(np.float64) ** 2).mean(axis=1) + 1e-12)
    return e, (hop * np.arange(n) + win / 2) / sr


def _stop_checks(x: np.ndarray, sr: int, phones) -> list[tuple[str, float, float, float]]:
    """For every p/b followed by a vowel or a sonorant consonant: (name, depth of the closure gap below the vowel (dB),
    burst position in the stop's span (0 = its start, 1 = its end), stop duration (s)).

    The closure is the quietest part of the stop's first 60 %; the burst is the first moment
    after it where the energy rises 15 dB (p) or 10 dB (b) above the gap."""
    e, t = _energy_db(x, sr)
    out = []
    for k in range(1, len(phones) - 1):
        p, nxt = phones[k], phones[k + 1]
        name = p.ipa if hasattr(p, "ipa") else p[0]
        s0, s1 = (p.start_s, p.end_s) if hasattr(p, "ipa") else (p[1], p[2])
        n0, n1 = (nxt.start_s, nxt.end_s) if hasattr(nxt, "ipa") else (nxt[1], nxt[2])
        nname = nxt.ipa if hasattr(nxt, "ipa") else nxt[0]
        sonorant = V.is_vowel(nname) or V.base_symbols(nname)[:1] in (["l"], ["ɹ"], ["r"], ["j"], ["w"], ["ʁ"])
        if V.base_symbols(name)[:1] not in (["p"], ["b"]) or not sonorant or s1 - s0 < 0.04:
            continue
        seg = (t >= s0) & (t < s1)
        vow = (t >= n0) & (t < n1)
        if seg.sum() < 4 or vow.sum() < 4:
            continue
        head = seg & (t < s0 + 0.6 * (s1 - s0))
        gap = np.median(e[head])
        depth = np.median(e[vow]) - gap
        i_min = np.flatnonzero(head)[np.argmin(e[head])]
        rise = 15.0 if V.base_symbols(name)[0] == "p" else 10.0     # b's voice bar is loud
        after = np.flatnonzero((np.arange(e.size) > i_min) & (e > gap + rise))
        burst = t[after[0]] if after.size else np.inf
        out.append((name, float(depth), float((burst - s0) / (s1 - s0)), float(s1 - s0)))
    return out


# ------------------------------------------------------------------------------------------
# phoneme events and visemes
# ------------------------------------------------------------------------------------------

def test_phoneme_events_cover_the_audio_and_bilabial_closures_are_silent_gaps():
    syn = espeak.synthesize("Papa bought a purple boat, and Bob paid a lot of bills.", "en-us", rate_wpm=150)
    ph = syn.phonemes
    assert ph[0].start_s == 0.0 and abs(ph[-1].end_s - syn.duration_s) < 1e-9
    assert all(abs(a.end_s - b.start_s) < 1e-9 for a, b in zip(ph, ph[1:]))       # contiguous
    assert sum(V.is_bilabial(p.ipa) for p in ph) >= 8
    checks = _stop_checks(syn.float_audio(), syn.sample_rate_hz, ph)
    assert len(checks) >= 5
    for name, depth, burst_pos, dur in checks:
        assert depth > (40.0 if name == "p" else 8.0), (name, depth)   # the closure is a low-energy gap ...
        assert 0.2 < burst_pos < 1.05, (name, burst_pos, dur)          # ... before the burst, in the stop


def test_one_binding_switches_between_ipa_and_mnemonic_names():
    """The library fixes the event names at initialisation; the binding re-initialises on a mode
    switch, and the phoneme times do not depend on the naming (espeak-ng itself varies a few
    samples from one call to the next, so within 1 ms)."""
    a1, ipa1 = espeak.phoneme_events("Bob bought a big pie.", "en-us", ipa=True)
    a2, mn = espeak.phoneme_events("Bob bought a big pie.", "en-us", ipa=False)
    a3, ipa2 = espeak.phoneme_events("Bob bought a big pie.", "en-us", ipa=True)
    assert len(ipa1) == len(mn) == len(ipa2) > 10
    for other in (mn, ipa2):
        assert np.abs(np.subtract([s for s, _ in ipa1], [s for s, _ in other])).max() <= 22
    assert abs(a1.size - a2.size) <= 22 and abs(a1.size - a3.size) <= 22
    assert [n for _, n in ipa1] == [n for _, n in ipa2]
    assert "ɔː" in {n for _, n in ipa1} or "ɑː" in {n for _, n in ipa1}    # IPA vowel of "bought"
    assert any(n in ("O:", "A:", "0") for _, n in mn) and not any("ː" in n for _, n in mn)


def test_mandarin_pinyin_and_variants_synthesize():
    zh = espeak.synthesize("ni3 hao3 wo3 men5 bu4 pa4", "cmn-latn-pinyin")
    assert [p.ipa for p in zh.phonemes if p.ipa != "_"][:2] == ["n", "i"]
    w = espeak.synthesize("Hello there", "en-us", variant="whisper")
    assert w.voice == "en-us+whisper" and w.duration_s > 0.3
    slow = espeak.synthesize("one two three four five", "en-us", rate_wpm=120).duration_s
    fast = espeak.synthesize("one two three four five", "en-us", rate_wpm=300).duration_s
    assert fast < 0.6 * slow


def test_text_sources():
    from emote.engine.training import text as TX
    zh = TX.sentences("cmn", 3, seed=1)
    assert all(any(ch.isdigit() for ch in s) for s in zh)          # tone-numbered pinyin
    assert TX.sentences("de", 4, seed=3) == TX.sentences("de", 4, seed=3) != TX.sentences("de", 4, seed=4)
    assert len({l.code for l in TX.LANGUAGES}) >= 30
    if TX.have_faker():
        pool = TX.word_pool("ru")
        assert len(pool) > 150 and all(not w.isascii() for w in pool)   # Cyrillic words, no English fallbacks
        for lang in ("bg", "ru", "el", "hi"):                           # no word mixes in Latin letters
            assert not [w for w in TX.word_pool(lang) if any(c.isascii() and c.isalpha() for c in w)]


def test_sentences_do_not_depend_on_the_hash_seed():
    import os
    import subprocess
    import sys
    code = "from emote.engine.training.text import sentences; print(sentences('it', 3, 5), sentences('ko', 2, 5))"
    outs = {subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                           env={**os.environ, "PYTHONHASHSEED": seed}).stdout for seed in ("1", "2")}
    assert len(outs) == 1


def test_viseme_classes():
    assert V.is_bilabial("p") and V.is_bilabial("mʲ") and V.is_bilabial("pf") and not V.is_bilabial("f")
    assert V.viseme_of("f").name == "labiodental" and V.viseme_of("u").name == "V_close_round"
    assert V.viseme_of("a").name == "V_open" and V.viseme_of("i").name == "V_close"
    assert V.base_symbols("tʃʰ") == ["t", "ʃ"] and V.is_vowel("aɪ") and not V.is_vowel("_")
    segs = V.segments("aɪ", 0.0, 0.2)
    assert [s[3] for s in segs] == ["a", "ɪ"] and segs[0][2] == pytest.approx(0.1)


def test_targets_follow_the_phonemes():
    syn = espeak.synthesize("Bob saw five big moons. Papa ate a fish.", "en-us", rate_wpm=150)
    n = int(np.ceil(syn.duration_s * 25))
    mouth = TG.mouth_channels(syn.phonemes, n, 25.0)
    for p in syn.phonemes:
        mid = int(0.5 * (p.start_s + p.end_s) * 25)
        if V.is_bilabial(p.ipa):
            assert mouth[mid, C["mouthClose"]] > 0.8, p
        if V.base_symbols(p.ipa)[:1] == ["f"] and p.dur_s > 0.05:
            assert mouth[mid, C["mouthRollLower"]] > 0.5, p
        if V.is_vowel(p.ipa) and V.base_symbols(p.ipa)[0] in "aɑæ" and p.dur_s > 0.08:
            assert mouth[mid, C["jawOpen"]] > 0.4 and mouth[mid, C["mouthClose"]] < 0.3, p
        if V.base_symbols(p.ipa)[:1] == ["u"] and p.dur_s > 0.08:
            assert mouth[mid, C["mouthPucker"]] > 0.4, p
    # silence returns to the photo's rest
    sil = np.zeros(40)
    quiet = TG.mouth_channels([espeak.Phone("_", 0.0, 1.6)], 40, 25.0)
    assert np.all(quiet == 0.0) and sil.size == 40
    # coarticulation: values change smoothly (no steps at phoneme boundaries)
    assert np.max(np.abs(np.diff(mouth[:, C["jawOpen"]]))) < 0.45


def test_prosody_processes_are_seeded_and_in_range():
    syn = espeak.synthesize("Is it really you? I cannot believe it! We waited for so long.", "en-us")
    from emote.engine.training.build_data import SR, _resample, features_of
    feats = features_of(_resample(syn.float_audio(), syn.sample_rate_hz))
    st = TG.Style(blink_per_min=40.0)
    a = TG.make_targets(syn.phonemes, feats, 25.0, st, np.random.default_rng(3))
    b = TG.make_targets(syn.phonemes, feats, 25.0, st, np.random.default_rng(3))
    c = TG.make_targets(syn.phonemes, feats, 25.0, st, np.random.default_rng(4))
    assert np.array_equal(a, b) and not np.array_equal(a, c)
    assert a.shape == (feats.shape[0], M.NUM_CHANNELS) and a.dtype == np.float32
    assert np.all(a == M.clip(a))
    assert np.std(a[:, C["headYaw_deg"]]) > 0.2 and np.max(a[:, C["eyeBlinkLeft"]]) > 0.6
    assert SR == 16000


# ------------------------------------------------------------------------------------------
# variants
# ------------------------------------------------------------------------------------------

def test_augmentations_keep_length_and_timing():
    from emote.engine.training import variants as VA
    syn = espeak.synthesize("Bob paid a pound for a pie.", "en-us")
    from emote.engine.training.build_data import _resample
    x = _resample(syn.float_audio(), syn.sample_rate_hz)
    rng = np.random.default_rng(0)
    for aug in (VA.Augmentation(opus_kbps=24), VA.Augmentation(source_rate_hz=8000, lowpass_hz=3400.0,
                                                                 highpass_hz=200.0),
                VA.Augmentation(rt60_s=0.4, reverb_wet=0.3, noise="pink", snr_db=20.0, gain_db=-6.0)):
        y = VA.augment(x, 16000, aug, rng)
        assert y.shape == x.shape and y.dtype == np.float32
        c = np.correlate(x[2000 - 160:30000 + 160], y[2000:30000], "valid")
        assert abs(int(np.argmax(c)) - 160) <= 2, aug          # no time shift (within 0.125 ms)


def test_telephone_channel_is_narrow_band_8_bit_and_keeps_timing():
    """variants.telephone: nothing left above 4 kHz, little below 300 Hz, mu-law's 256 levels at
    8 kHz, the same length and no time shift, so the exact phone times still hold."""
    from emote.engine.training import variants as VA
    from emote.engine.training.build_data import _resample
    syn = espeak.synthesize("Bob paid a pound for a pie.", "en-us")
    x = _resample(syn.float_audio(), syn.sample_rate_hz)
    y = VA.telephone(x, 16000, np.random.default_rng(3))
    assert y.shape == x.shape and y.dtype == np.float32
    spec = lambda a: np.abs(np.fft.rfft(a)) ** 2                        # noqa: E731
    f = np.fft.rfftfreq(x.size, 1 / 16000)
    sx, sy = spec(x), spec(y)
    band = lambda s, lo, hi: s[(f >= lo) & (f < hi)].sum() / s[(f >= 500) & (f < 3000)].sum()   # noqa: E731
    assert band(sx, 4500, 8000) > 1e-4 and band(sy, 4500, 8000) < 1e-3 * band(sx, 4500, 8000)
    assert band(sy, 50, 150) < 0.1 * band(sx, 50, 150)
    assert 10 ** (-12.5 / 20) < np.abs(y).max() < 1.0
    c = np.correlate(x[2000 - 160:30000 + 160], y[2000:30000], "valid")
    assert abs(int(np.argmax(c)) - 160) <= 2                             # no time shift


def test_singing_keeps_phoneme_times_consistent():
    pytest.importorskip("parselmouth")
    from emote.engine.training import variants as VA
    syn = espeak.synthesize("Papa bought a purple boat for baby.", "en-us", rate_wpm=140)
    y, ph, info = VA.sing(syn.float_audio(), syn.sample_rate_hz, syn.phonemes, np.random.default_rng(1))
    assert y.size / syn.sample_rate_hz > 1.3 * syn.duration_s and info["notes_midi"]
    assert abs(ph[-1].end_s - y.size / syn.sample_rate_hz) < 0.01
    checks = _stop_checks(y, syn.sample_rate_hz, ph)
    assert len(checks) >= 4
    assert np.median([d for _, d, _, _ in checks]) > 15.0          # the gaps are still where the stops are
    assert np.mean([0.2 < b < 1.1 for _, _, b, _ in checks]) >= 0.75


# ------------------------------------------------------------------------------------------
# build: tiny shard set
# ------------------------------------------------------------------------------------------

def _tiny(tmp_path, name: str, workers: int, **kw) -> B.BuildConfig:
    cfg = B.BuildConfig(out=str(tmp_path / name), seed=7, hours_synthetic=0.025, languages=("en", "de", "it"),
                        real=False, workers=workers, utts_per_shard=4, sentences_per_utt=(1, 2),
                        words_per_sentence=(4, 8), p_augment=0.2, **kw)
    return cfg


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("shards")
    cfg = _tiny(tmp, "a", workers=1)
    m = B.build(cfg, progress=False)
    return cfg, m


def test_tiny_build_manifest_and_shards(tiny):
    cfg, m = tiny
    ds = open_dataset(cfg.out)
    assert ds.channel_names == list(M.NAMES) and ds.feature_names == list(FeatureStream().names)
    assert m["totals"]["languages"] == 3 and not m["skipped"]
    utts = list(ds.utterances())
    assert len(utts) == m["totals"]["utterances"] >= 6
    assert {u.meta["split"] for u in utts} == {"train", "heldout_language"} | (
        {"heldout_speaker"} if any(u.meta["split"] == "heldout_speaker" for u in utts) else set())
    assert all(u.meta["language"] == "it" for u in utts if u.meta["split"] == "heldout_language")
    assert [mt["id"] for mt in ds.metas()] == [u.id for u in utts]          # metadata alone, same order
    assert [mt["id"] for mt in ds.metas("train")] == [u.id for u in ds.utterances(split="train")]
    for u in utts:
        assert u.features.shape == (u.meta["frames"], len(ds.feature_names))
        assert u.targets.shape == (u.meta["frames"], M.NUM_CHANNELS)
        assert u.features.shape[0] == -(-u.audio.size // 640)
        assert np.all(u.targets == M.clip(u.targets))
    # stored features are exactly the runtime FeatureStream on the stored audio
    u = utts[0]
    fs = FeatureStream()
    fs.push(u.float_audio())
    assert np.array_equal(np.concatenate([fs.pull(), fs.finish()]), u.features)
    json.dumps(m)


def test_tiny_build_phoneme_times_match_the_audio(tiny):
    cfg, _ = tiny
    checks = []
    for u in open_dataset(cfg.out).utterances(where=lambda m: "augmentation" not in m and m["variant"] in
                                              ("normal", "rapid", "quiet")):
        x = u.float_audio()
        ph = u.phonemes
        checks += _stop_checks(x, 16000, ph)
        for p, s0, s1 in ph:                                  # the lips are shut on every bilabial
            if V.is_bilabial(p) and s1 - s0 > 0.03:
                assert u.targets[min(int(0.5 * (s0 + s1) * 25), len(u.targets) - 1), C["mouthClose"]] > 0.75
    assert len(checks) >= 3, checks
    voiceless = [c for c in checks if V.base_symbols(c[0])[0] == "p"]
    voiced = [c for c in checks if V.base_symbols(c[0])[0] == "b"]
    # p: a silent closure (an utterance-initial p has no vowel before it to be quieter than: allow a few)
    assert np.mean([c[1] > 25.0 for c in voiceless] or [1.0]) >= 0.75, voiceless
    assert np.mean([c[1] > 5.0 for c in voiced] or [1.0]) >= 0.75, voiced   # b: a voice bar below the vowel
    bursts = np.array([c[2] for c in checks])
    assert np.mean((bursts > 0.2) & (bursts < 1.1)) >= 0.75, checks   # ... and the burst inside the stop


def test_build_is_reproducible_whatever_the_workers(tiny, tmp_path):
    cfg, m = tiny
    m2 = B.build(_tiny(tmp_path, "b", workers=2), progress=False)
    assert m2["totals"] == m["totals"]
    a = list(open_dataset(cfg.out).utterances())
    b = list(open_dataset(tmp_path / "b").utterances())
    assert [u.id for u in a] == [u.id for u in b]
    for ua, ub in zip(a, b):
        assert np.array_equal(ua.features, ub.features) and np.array_equal(ua.targets, ub.targets)
        assert np.array_equal(ua.audio, ub.audio) and ua.meta == ub.meta


def test_build_command_line(tmp_path, capsys):
    assert B.main(["--out", str(tmp_path / "c"), "--tiny", "--no-real", "--languages", "en", "--quiet",
                   "--workers", "1"]) == 0
    assert "utterances" in capsys.readouterr().out
    assert (tmp_path / "c" / "manifest.json").is_file()


# ------------------------------------------------------------------------------------------
# real corpora: sources and defaults
# ------------------------------------------------------------------------------------------

from emote.engine.training import corpora as CO           # noqa: E402


def test_source_indices_are_stable_and_fillets_is_opt_in():
    assert CO.SOURCES == ("asterisk-en", "asterisk-es", "asterisk-fr", "asterisk-it", "asterisk-ru",
                          "fillets-cs", "fillets-nl")             # a job's seed holds the index: append only
    # only the voices whose DTW labels pass the closure audit (fillets fails it)
    assert CO.DEFAULT_SOURCES == CO.SOURCES[:5]
    with pytest.raises(ValueError, match="unknown real sources"):
        CO.plan_real(1, 1, sources=("asterisk-xx",))


@pytest.mark.skipif(not CO.asterisk_items("en"), reason="asterisk-core-sounds-en(-wav) is not installed")
def test_plan_real_default_leaves_fillets_out_and_keeps_old_seeds():
    jobs = CO.plan_real(11, max_per_source=2)
    assert jobs and {j["source"] for j in jobs} <= set(CO.DEFAULT_SOURCES)
    en0 = next(j for j in jobs if j["source"] == "asterisk-en" and j["index"] == 0)
    assert en0["seed"] == [11, 5, 0, 0]
    for j in jobs:
        assert j["seed"] == [11, 5, CO.SOURCES.index(j["source"]), j["index"]]
    every = CO.plan_real(11, max_per_source=2, sources=CO.SOURCES)
    assert [j for j in every if j["source"] in CO.DEFAULT_SOURCES] == jobs      # same jobs, same seeds
    for source in ("fillets-cs", "fillets-nl"):
        if CO._items(source):
            assert source in {j["source"] for j in every}
    only_en = CO.plan_real(11, max_per_source=2, sources=("asterisk-en",))
    assert only_en == [j for j in jobs if j["source"] == "asterisk-en"]
