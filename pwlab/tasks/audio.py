"""Audio task: DTMF telephone tones for the digits 0-9, synthesized (nothing downloaded).

Each key sounds two sines at once, one from the low (row) group and one from the high
(column) group of the standard keypad (ITU-T Q.23):

             1209 Hz  1336 Hz  1477 Hz
    697 Hz      1        2        3
    770 Hz      4        5        6
    852 Hz      7        8        9
    941 Hz               0

Every example draws its duration, onset offset, amplitude, phases and noise level, so the
model must find the tone pair wherever and however loud it is.
"""
from __future__ import annotations

import math

import torch

from pwlab.tasks._split import generator
from pwlab.tasks.base import Task

ROW_HZ = (697.0, 770.0, 852.0, 941.0)
COL_HZ = (1209.0, 1336.0, 1477.0)
#: (low Hz, high Hz) for digit d at index d
DTMF_HZ = ((941.0, 1336.0),) + tuple((ROW_HZ[(d - 1) // 3], COL_HZ[(d - 1) % 3]) for d in range(1, 10))


def synthesize(labels: torch.Tensor, gen: torch.Generator, *, sample_rate: int = 4000, length: int = 1000,
               min_duration: float = 0.08, max_duration: float = 0.2, noise: tuple[float, float] = (0.05, 0.4)
               ) -> torch.Tensor:
    """Waveforms for DTMF digits.

    Args:
        labels: (N,) long digits 0..9.
        gen: the random stream (durations, offsets, amplitudes, phases, noise).
    Returns:
        (N, length) float waveforms: a tone pair of random duration in [min_duration,
        max_duration] s at a random offset, amplitude in [0.3, 1], plus white Gaussian noise
        of a random std in ``noise``.
    """
    n = labels.shape[0]
    hz = torch.tensor(DTMF_HZ)[labels]                                         # (N, 2)
    t = torch.arange(length, dtype=torch.float32) / sample_rate                # (L,) seconds
    dur = min_duration + (max_duration - min_duration) * torch.rand(n, generator=gen)
    dur_samples = (dur * sample_rate).long().clamp(max=length)
    start = (torch.rand(n, generator=gen) * (length - dur_samples + 1)).long()  # onset anywhere it fits
    amp = 0.3 + 0.7 * torch.rand(n, generator=gen)
    phase = 2 * math.pi * torch.rand(n, 2, generator=gen)
    sigma = noise[0] + (noise[1] - noise[0]) * torch.rand(n, generator=gen)
    idx = torch.arange(length)
    on = ((idx >= start[:, None]) & (idx < (start + dur_samples)[:, None])).float()  # (N, L) tone envelope
    tone = torch.sin(2 * math.pi * hz[:, :1] * t + phase[:, :1]) + torch.sin(2 * math.pi * hz[:, 1:] * t + phase[:, 1:])
    wave = 0.5 * amp[:, None] * tone * on + sigma[:, None] * torch.randn(n, length, generator=gen)
    return wave


def dtmf(seed: int = 0, *, n_train: int = 2000, n_test: int = 500, sample_rate: int = 4000,
         length: int = 1000) -> Task:
    """DTMF digit tones as (N, length) waveforms (default 4000 Hz, 0.25 s); 10 balanced classes.

    Train and test are independent draws (continuous random parameters, so no waveform
    repeats); each split holds every digit equally often (up to n % 10).
    """
    if sample_rate < 2 * 1477 + 1:
        raise ValueError(f"sample_rate must exceed twice the highest DTMF frequency (> 2954 Hz), got {sample_rate!r}")
    gen = generator(seed, salt=3)

    def labels(n: int) -> torch.Tensor:
        y = torch.arange(n) % 10
        return y[torch.randperm(n, generator=gen)]

    y_tr, y_te = labels(n_train), labels(n_test)
    x_tr = synthesize(y_tr, gen, sample_rate=sample_rate, length=length)
    x_te = synthesize(y_te, gen, sample_rate=sample_rate, length=length)
    return Task(name="dtmf", sense="audio", kind="classification", classes=tuple(str(i) for i in range(10)),
                x_train=x_tr, y_train=y_tr, x_test=x_te, y_test=y_te, metric="accuracy",
                description=f"DTMF keypad tones 0-9, {sample_rate} Hz, {length / sample_rate:.2f} s, random timing and noise",
                meta={"sample_rate": sample_rate, "length": length, "seed": seed})
