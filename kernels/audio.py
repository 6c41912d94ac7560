"""Hot numeric audio transforms: mel filterbank, windowed power spectra, spectral shape, YIN pitch.

No knowledge of streams or sessions: every function maps arrays to arrays. Computation is in
float64 (callers cast results); nothing here allocates per call more than its outputs need.
"""
from __future__ import annotations

import numpy as np

__all__ = ["hz_to_mel", "mel_to_hz", "mel_filterbank", "hann_window", "power_spectra",
           "band_masks", "rowdot", "SpectrumSummary", "Yin"]


def hz_to_mel(f_hz: np.ndarray | float) -> np.ndarray:
    """HTK mel scale: 2595 log10(1 + f / 700)."""
    return 2595.0 * np.log10(1.0 + np.asarray(f_hz, np.float64) / 700.0)


def mel_to_hz(mel: np.ndarray | float) -> np.ndarray:
    """Inverse of :func:`hz_to_mel`."""
    return 700.0 * (10.0 ** (np.asarray(mel, np.float64) / 2595.0) - 1.0)


def mel_filterbank(sample_rate_hz: int, n_fft: int, n_mels: int,
                   fmin_hz: float = 20.0, fmax_hz: float | None = None) -> np.ndarray:
    """Triangular mel filters, area-normalised (Slaney style) on the HTK mel scale.

    Returns (n_fft // 2 + 1, n_mels) float64, so ``power @ fb`` gives (…, n_mels) band powers.
    """
    fmax_hz = sample_rate_hz / 2.0 if fmax_hz is None else fmax_hz
    if not 0.0 <= fmin_hz < fmax_hz <= sample_rate_hz / 2.0:
        raise ValueError(f"mel range {fmin_hz}..{fmax_hz} Hz invalid at {sample_rate_hz} Hz")
    freqs = np.arange(n_fft // 2 + 1) * (sample_rate_hz / n_fft)
    edges = mel_to_hz(np.linspace(hz_to_mel(fmin_hz), hz_to_mel(fmax_hz), n_mels + 2))
    lo, mid, hi = edges[:-2, None], edges[1:-1, None], edges[2:, None]
    up = (freqs[None, :] - lo) / (mid - lo)
    down = (hi - freqs[None, :]) / (hi - mid)
    fb = np.maximum(0.0, np.minimum(up, down)) * (2.0 / (hi - lo))
    return np.ascontiguousarray(fb.T)


def hann_window(n: int) -> np.ndarray:
    """Periodic Hann window of length n, float64."""
    return 0.5 - 0.5 * np.cos(2.0 * np.pi * np.arange(n) / n)


def power_spectra(frames: np.ndarray, window: np.ndarray, n_fft: int) -> tuple[np.ndarray, np.ndarray]:
    """Windowed power spectra and mean squares of (k, win) frames.

    Returns ``(power, mean_square)``: ``|rfft(frames * window, n_fft)|² / Σ window²`` as
    (k, n_fft // 2 + 1) float64, and the window-weighted mean square of each frame (k,) float64
    (``Σ (frames * window)² / Σ window²``, the frame's power with the window's emphasis).
    """
    fw = frames * window
    ww = float(window @ window)
    spec = np.fft.rfft(fw, n_fft, axis=-1)
    return (spec.real ** 2 + spec.imag ** 2) / ww, (fw * fw).sum(axis=-1) / ww


def band_masks(sample_rate_hz: int, n_fft: int, bands_hz: tuple[tuple[float, float], ...]) -> np.ndarray:
    """(len(bands), n_fft // 2 + 1) float64 0/1 masks selecting the rfft bins of each [lo, hi) band."""
    freqs = np.arange(n_fft // 2 + 1) * (sample_rate_hz / n_fft)
    return np.stack([((freqs >= lo) & (freqs < hi)).astype(np.float64) for lo, hi in bands_hz])


def rowdot(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """``a @ b.T`` for (n, k) and (m, k) as (n, m), by elementwise products and per-row sums.

    Slower than BLAS but each output depends only on its own row of ``a``, bit for bit, whatever
    n is (BLAS kernels may sum differently for different batch sizes), which keeps streaming
    features identical however frames are batched.
    """
    return (a[:, None, :] * b[None, :, :]).sum(axis=-1)


class SpectrumSummary:
    """Per-spectrum summary of power spectra (n, n_bins) float64, with one row-wise projection.

    ``SpectrumSummary(freqs_hz, masks, filterbank)`` with rfft bin frequencies (n_bins,), 0/1 band
    masks (k, n_bins) and a filterbank (n_bins, m) (e.g. mel). Calling it on power (n, n_bins)
    returns ``(centroid_hz (n,), flatness (n,), band_fraction (n, k), band_centroid_hz (n, k),
    filter_power (n, m))``: the power-weighted mean frequency over all bins but DC (0 for
    silence); Wiener flatness over the bins but DC (geometric / arithmetic mean, 0..1; 1 for white
    noise and for digital silence); each band's share of the total power; the power-weighted mean
    frequency inside each band (0 where silent); and ``power @ filterbank``. Each output row
    depends on its input row only, bit for bit (see :func:`rowdot`).
    """

    def __init__(self, freqs_hz: np.ndarray, masks: np.ndarray, filterbank: np.ndarray, eps: float = 1e-12) -> None:
        no_dc = np.ones_like(freqs_hz)
        no_dc[0] = 0.0
        self.k = masks.shape[0]
        self.eps = eps
        self.weights = np.ascontiguousarray(np.vstack([no_dc, freqs_hz * no_dc, masks, masks * freqs_hz,
                                                       np.asarray(filterbank).T]))

    def __call__(self, power: np.ndarray) -> tuple[np.ndarray, ...]:
        eps, k = self.eps, self.k
        proj = rowdot(power, self.weights)
        total, weighted = proj[:, 0], proj[:, 1]
        band_pow, band_f = proj[:, 2:2 + k], proj[:, 2 + k:2 + 2 * k]
        centroid = np.where(total > eps, weighted / np.maximum(total, eps), 0.0)
        p = power[:, 1:] + eps
        flatness = np.minimum(np.exp(np.log(p).mean(axis=-1)) / p.mean(axis=-1), 1.0)
        band_frac = band_pow / (total[:, None] + eps)
        band_cent = np.where(band_pow > eps, band_f / np.maximum(band_pow, eps), 0.0)
        return centroid, flatness, band_frac, band_cent, proj[:, 2 + 2 * k:]


class Yin:
    """Batched YIN pitch (de Cheveigné & Kawahara 2002) on fixed-length windows, via FFT correlation.

    ``Yin(sr, fmin, fmax, integration)`` precomputes sizes; ``yin(x)`` takes windows (n, L) with
    ``L = yin.window_samples = integration + ceil(sr / fmin)`` and returns ``(f0_hz, aperiodicity)``,
    both (n,) float64: f0 from the first dip of the cumulative-mean-normalised difference d' below
    ``threshold`` (followed down to its local minimum, refined by a parabola); aperiodicity is d'
    there (0 = perfectly periodic, ~1 = noise) or the smallest d' when no dip is below the
    threshold, in which case f0 = 0. Silent windows (< -90 dBFS) give f0 = 0, aperiodicity = 1.
    Each row's result depends on that row only.
    """

    def __init__(self, sample_rate_hz: int, fmin_hz: float, fmax_hz: float,
                 integration_samples: int, threshold: float = 0.2) -> None:
        self.sr = float(sample_rate_hz)
        self.tau_min = max(2, int(np.floor(sample_rate_hz / fmax_hz)))
        self.tau_max = int(np.ceil(sample_rate_hz / fmin_hz))
        self.w = int(integration_samples)
        self.window_samples = self.w + self.tau_max
        self.n_fft = 1 << int(np.ceil(np.log2(self.window_samples)))
        self.threshold = float(threshold)
        self._taus = np.arange(1, self.tau_max + 1, dtype=np.float64)

    def _dprime(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Cumulative-mean-normalised difference d'(τ), τ = 1..tau_max at column τ-1; and e0."""
        w, tmax, n = self.w, self.tau_max, x.shape[0]
        e = np.zeros((n, x.shape[1] + 1))
        np.cumsum(x * x, axis=1, out=e[:, 1:])
        e0 = e[:, w]
        spec_a = np.fft.rfft(x[:, :w], self.n_fft, axis=1)
        spec_b = np.fft.rfft(x, self.n_fft, axis=1)
        corr = np.fft.irfft(np.conj(spec_a) * spec_b, self.n_fft, axis=1)
        d = e0[:, None] + (e[:, w + 1:w + tmax + 1] - e[:, 1:tmax + 1]) - 2.0 * corr[:, 1:tmax + 1]
        np.maximum(d, 0.0, out=d)
        cm = np.cumsum(d, axis=1)
        return np.where(cm > 0, d * self._taus / np.maximum(cm, 1e-300), 1.0), e0

    def __call__(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        x = np.atleast_2d(np.asarray(x, np.float64))
        n = x.shape[0]
        if n == 0:
            return np.zeros(0), np.zeros(0)
        dn, e0 = self._dprime(x)
        lo = self.tau_min - 1
        seg = dn[:, lo:]
        m = seg.shape[1]
        below = seg < self.threshold
        has = below.any(axis=1)
        first = np.argmax(below, axis=1)
        rising = seg[:, 1:] >= seg[:, :-1]
        rising &= np.arange(m - 1)[None, :] >= first[:, None]
        j = np.where(rising.any(axis=1), np.argmax(rising, axis=1), m - 1)
        rows = np.arange(n)
        i = lo + j                                   # column of the dip in dn (τ = i + 1)
        a = dn[rows, np.maximum(i - 1, 0)]
        b = dn[rows, i]
        c = dn[rows, np.minimum(i + 1, self.tau_max - 1)]
        den = a - 2.0 * b + c
        interior = (i > lo) & (i < self.tau_max - 1) & (den > 0)
        shift = np.where(interior, 0.5 * (a - c) / np.where(den > 0, den, 1.0), 0.0)
        shift = np.clip(shift, -1.0, 1.0)
        silent = e0 < 1e-9 * self.w
        voiced = has & ~silent
        f0 = np.where(voiced, self.sr / (i + 1 + shift), 0.0)
        ap = np.where(has, b, seg.min(axis=1))
        ap = np.where(silent, 1.0, np.clip(ap, 0.0, 1.0))
        return f0, ap
