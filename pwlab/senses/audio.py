"""Audio sense: log-magnitude STFT frames -> linear -> plus learned positions (as in AST/Whisper front ends)."""
from __future__ import annotations

import torch
from torch import Tensor, nn

from pwlab._checks import positive_int
from pwlab.senses._common import check_d_model, check_input, positions
from pwlab.senses.base import SENSES, Tokens


class AudioEncoder(nn.Module):
    """(B, L) waveforms -> one token per STFT frame.

    Each frame is ``log1p(|STFT|)`` over ``n_fft // 2 + 1`` frequency bins (Hann window,
    centered frames, hop ``hop_length``); the log compresses the loudness range so a quiet
    tone and a loud one give similar spectra up to an offset.

    Args:
        d_model: token width D.
        length: waveform length L the encoder expects.
        n_fft: FFT size (at 4000 Hz, 128 gives 31 Hz bins: DTMF rows 697/770 Hz are 2 bins apart).
        hop_length: samples between frames.
        id_offset: added to the frame index to form ``token_ids``.

    Shapes: x (B, L) -> tokens (B, T, D) with T = 1 + L // hop_length.
    """

    sense = SENSES.index("audio")

    def __init__(self, d_model: int, length: int = 1000, n_fft: int = 128, hop_length: int = 64, id_offset: int = 0):
        super().__init__()
        self.d_model = check_d_model(d_model)
        self.length = positive_int("length", length)
        self.n_fft = positive_int("n_fft", n_fft, minimum=2)
        self.hop_length = positive_int("hop_length", hop_length)
        self.num_frames = 1 + length // hop_length
        self.num_ids = self.num_frames
        self.id_offset = id_offset
        self.register_buffer("window", torch.hann_window(n_fft), persistent=False)
        self.proj = nn.Linear(n_fft // 2 + 1, d_model)
        self.pos = positions(self.num_frames, d_model)

    def spectrogram(self, x: Tensor) -> Tensor:
        """(B, L) -> (B, T, n_fft // 2 + 1) log-magnitude frames."""
        spec = torch.stft(x, self.n_fft, hop_length=self.hop_length, window=self.window, center=True,
                          return_complex=True)                    # (B, F, T)
        return torch.log1p(spec.abs()).transpose(1, 2)

    def forward(self, x: Tensor) -> Tokens:
        check_input(x, dims=2, what=f"(B, L) waveforms with L = {self.length}", floating=True)
        if x.shape[1] != self.length:
            raise ValueError(f"x must be (B, L) waveforms with L = {self.length}, got {tuple(x.shape)}")
        b = x.shape[0]
        tokens = self.proj(self.spectrogram(x)) + self.pos        # (B, T, D)
        ids = (torch.arange(self.num_frames, device=x.device) + self.id_offset).expand(b, -1)
        mask = torch.ones(b, self.num_frames, dtype=torch.bool, device=x.device)
        return Tokens(tokens=tokens, mask=mask, token_ids=ids, sense=self.sense)
