"""Small helpers shared by the sense encoders: input checks that name the parameter."""
from __future__ import annotations

import torch
from torch import Tensor

from pwlab._checks import positive_int


def check_d_model(d_model) -> int:
    return positive_int("d_model", d_model)


def check_input(x, *, dims: int, what: str, floating: bool) -> Tensor:
    """Raise ValueError naming ``x`` unless it is a tensor of ``dims`` dims and the right dtype."""
    if not isinstance(x, Tensor) or x.dim() != dims:
        shape = tuple(x.shape) if isinstance(x, Tensor) else type(x).__name__
        raise ValueError(f"x must be {what}, got {shape}")
    if floating and not x.is_floating_point():
        raise ValueError(f"x must be a float tensor ({what}), got dtype {x.dtype}")
    if not floating and x.dtype not in (torch.int64, torch.int32):
        raise ValueError(f"x must be a long tensor of ids ({what}), got dtype {x.dtype}")
    return x


def positions(n: int, d_model: int) -> torch.nn.Parameter:
    """A learned position table (n, d_model), small init as in ViT/GPT."""
    return torch.nn.Parameter(0.02 * torch.randn(n, d_model))
