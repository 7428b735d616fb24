"""``speech``: sequence classification of synthetic audio, as short-time log-spectra.

Stands in for speech processing: each example is a 0.4 s waveform at 8 kHz rendered into frames of a
short-time Fourier transform (256-sample Hann window, hop 128 -> 24 frames), pooled into 32 linear
bands and log-compressed, then standardised with the training set's mean and std.
Five classes (balanced), each with random frequency, level, onset/offset and background noise
(SNR 5-20 dB):

- 0 ``tone``: a steady sine, 300-3000 Hz;
- 1 ``chirp_up``: an exponential sweep upward (ratio 2-4);
- 2 ``chirp_down``: the same sweep downward;
- 3 ``noise``: a band of noise (random centre and width);
- 4 ``warble``: a tone alternating between two pitches (ratio 1.3-1.8) every 40-80 ms.

chirp_up and chirp_down have the same time-averaged spectrum, so frame order matters; the baseline
``order_blind_accuracy`` (a linear classifier on the per-band mean and std over frames, fit on
train) shows how far an order-blind classifier gets (about 0.6: it confuses the two chirps). x (24,
N, 32) float32, y (N,) int64.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ._base import Split, Task, check_positive_int, check_seed, task_config

__all__ = ["CLASSES", "SpeechTask", "log_spectrogram", "render_waveforms"]

CLASSES: tuple[str, ...] = ("tone", "chirp_up", "chirp_down", "noise", "warble")
SAMPLE_RATE = 8000
N_FFT = 256
HOP = 128
BANDS = 32


def render_waveforms(labels: np.ndarray, n_samples: int, rng: np.random.Generator) -> np.ndarray:
    """(N, n_samples) float64 waveforms, one per class id in ``labels`` (see the module
    docstring)."""
    n = len(labels)
    t = np.arange(n_samples) / SAMPLE_RATE  # seconds
    dur = n_samples / SAMPLE_RATE
    f0 = np.exp(rng.uniform(np.log(300.0), np.log(3000.0), size=(n, 1)))
    ratio = rng.uniform(2.0, 4.0, size=(n, 1))
    # instantaneous frequency (N, L) per class; noise rows are overwritten below
    freq = np.broadcast_to(f0, (n, n_samples)).copy()
    up = labels == 1
    down = labels == 2
    lo = np.minimum(f0, 3000.0 / ratio)  # keep sweeps below 3 kHz
    sweep = lo * ratio ** (t[None, :] / dur)
    freq[up] = sweep[up]
    freq[down] = sweep[down][:, ::-1]
    warble = labels == 4
    period = rng.uniform(0.04, 0.08, size=(n, 1))
    step = rng.uniform(1.3, 1.8, size=(n, 1))
    alt = np.floor(t[None, :] / period) % 2 == 1
    freq[warble] = (f0 * np.where(alt, step, 1.0))[warble]
    phase = 2.0 * np.pi * np.cumsum(freq, axis=1) / SAMPLE_RATE + rng.uniform(0, 2 * np.pi, (n, 1))
    wave = np.sin(phase)
    noise_rows = labels == 3
    if noise_rows.any():
        spec = np.fft.rfft(rng.standard_normal((int(noise_rows.sum()), n_samples)), axis=1)
        fr = np.fft.rfftfreq(n_samples, 1.0 / SAMPLE_RATE)[None, :]
        centre = np.exp(rng.uniform(np.log(400.0), np.log(3000.0), size=(len(spec), 1)))
        width = rng.uniform(0.2, 0.8, size=(len(spec), 1)) * centre
        spec *= np.abs(fr - centre) < width
        band = np.fft.irfft(spec, n=n_samples, axis=1)
        wave[noise_rows] = band / (band.std(axis=1, keepdims=True) + 1e-12) * np.sqrt(0.5)
    # random onset/offset: active for 60-100% of the clip
    active = rng.uniform(0.6, 1.0, size=(n, 1)) * dur
    onset = rng.uniform(0.0, 1.0, size=(n, 1)) * (dur - active)
    env = ((t[None, :] >= onset) & (t[None, :] < onset + active)).astype(np.float64)
    level = 10.0 ** rng.uniform(-1.0, 0.0, size=(n, 1))
    snr_db = rng.uniform(5.0, 20.0, size=(n, 1))
    sig = level * env * wave
    noise_std = level * np.sqrt(0.5) / 10.0 ** (snr_db / 20.0)
    return sig + noise_std * rng.standard_normal((n, n_samples))


def log_spectrogram(waves: np.ndarray) -> np.ndarray:
    """(F, N, BANDS) float64 log band energies of waveforms (N, L): Hann-windowed frames of N_FFT
    samples every HOP samples, |rfft|^2 pooled into BANDS equal-width bands, log(1e-6 + energy)."""
    n_frames = 1 + (waves.shape[1] - N_FFT) // HOP
    idx = (np.arange(n_frames) * HOP)[:, None] + np.arange(N_FFT)[None, :]
    frames = waves[:, idx] * np.hanning(N_FFT)  # (N, F, N_FFT)
    power = np.abs(np.fft.rfft(frames, axis=2)) ** 2  # (N, F, N_FFT/2 + 1)
    per = (N_FFT // 2) // BANDS
    bands = power[:, :, : per * BANDS].reshape(power.shape[0], n_frames, BANDS, per).sum(axis=3)
    return np.log(1e-6 + bands).transpose(1, 0, 2)


class SpeechTask(Task):
    """Synthetic audio classification; see the module docstring."""

    name = "speech"
    description = (
        "speech-like: classify tone/chirp up/chirp down/noise/warble from log-spectra frames"
    )
    mode = "many_to_one"
    kind = "multiclass"
    data_options = ("n_train", "n_val")
    default_config: dict[str, Any] = task_config(
        cell="gru",
        hidden=64,
        seq_len=24,
        batch_size=32,
        epochs=8,
        lr=0.005,
        mode="many_to_one",
        loss="cross_entropy",
        n_train=3000,
        n_val=1000,
    )

    def make_data(
        self, seed: int = 0, *, n_train: int = 3000, n_val: int = 1000, **_: Any
    ) -> tuple[Split, Split]:
        """(train, val): x (24, N, 32) float32 standardised log-spectra, y (N,) int64 class ids."""
        seed = check_seed(seed)
        n_train = check_positive_int("n_train", n_train)
        n_val = check_positive_int("n_val", n_val)
        rng = np.random.default_rng(seed)
        n_samples = int(0.4 * SAMPLE_RATE) - int(0.4 * SAMPLE_RATE - N_FFT) % HOP
        feats, labels = [], []
        for n in (n_train, n_val):
            y = rng.permutation(np.arange(n) % len(CLASSES)).astype(np.int64)
            feats.append(log_spectrogram(render_waveforms(y, n_samples, rng)))
            labels.append(y)
        mean = feats[0].mean(axis=(0, 1))
        std = feats[0].std(axis=(0, 1)) + 1e-8
        out = [
            Split(((f - mean) / std).astype(np.float32), y, info={"classes": list(CLASSES)})
            for f, y in zip(feats, labels)
        ]
        return out[0], out[1]

    def sizes(self, train: Split) -> dict[str, Any]:
        return {"input_size": BANDS, "output_size": len(CLASSES)}

    def baseline(self, val: Split, train: Split | None = None) -> dict[str, float]:
        """chance (majority) accuracy, and ``order_blind_accuracy``: a linear classifier (ridge
        regression on one-hot targets) over each example's per-band mean and std across frames,
        which ignore frame order (fit on ``train`` if given, else on ``val``: an optimistic
        bound)."""
        counts = np.bincount(val.y, minlength=len(CLASSES))
        fit = train if train is not None else val
        a = _order_blind_features(fit.x)
        target = 2.0 * np.eye(len(CLASSES))[fit.y] - 1.0
        w = np.linalg.solve(a.T @ a + 1e-2 * np.eye(a.shape[1]), a.T @ target)
        pred = np.argmax(_order_blind_features(val.x) @ w, axis=1)
        return {
            "majority_accuracy": float(counts.max() / counts.sum()),
            "order_blind_accuracy": float(np.mean(pred == val.y)),
        }


def _order_blind_features(x: np.ndarray) -> np.ndarray:
    """(N, 2 * BANDS + 1): per-band mean and std over frames of x (F, N, BANDS), and a constant
    1."""
    return np.hstack([x.mean(axis=0), x.std(axis=0), np.ones((x.shape[1], 1))])
