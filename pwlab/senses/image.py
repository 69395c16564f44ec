"""Image sense: linear patch embedding plus learned 2-D positions (ViT, Dosovitskiy et al. 2021)."""
from __future__ import annotations

import torch
from torch import Tensor, nn

from pwlab.senses._common import check_d_model, check_input, positions
from pwlab.senses.base import SENSES, Tokens


class ImageEncoder(nn.Module):
    """(B, H, W) grey images in [0, 1] -> one token per p x p patch.

    The 2-D position of patch (r, c) is row[r] + col[c] (factorized, so an 8x8 image with
    2x2 patches learns 4 + 4 position vectors instead of 16).

    Args:
        d_model: token width D.
        image_size: (H, W).
        patch_size: p; must divide H and W.
        id_offset: added to the patch index to form ``token_ids``.

    Shapes: x (B, H, W) -> tokens (B, T, D) with T = (H/p)(W/p), patches in row-major order.
    """

    sense = SENSES.index("image")

    def __init__(self, d_model: int, image_size: tuple[int, int] = (8, 8), patch_size: int = 2, id_offset: int = 0):
        super().__init__()
        self.d_model = check_d_model(d_model)
        self.image_size = (int(image_size[0]), int(image_size[1]))
        h, w = self.image_size
        if not isinstance(patch_size, int) or patch_size < 1 or h % patch_size or w % patch_size:
            raise ValueError(f"patch_size must be a positive integer dividing image_size {self.image_size}, got {patch_size!r}")
        self.patch_size = patch_size
        self.grid = (h // patch_size, w // patch_size)
        self.num_ids = self.grid[0] * self.grid[1]
        self.id_offset = id_offset
        self.proj = nn.Linear(patch_size * patch_size, d_model)
        self.row = positions(self.grid[0], d_model)
        self.col = positions(self.grid[1], d_model)

    def forward(self, x: Tensor) -> Tokens:
        check_input(x, dims=3, what=f"(B, H, W) images with (H, W) = {self.image_size}", floating=True)
        if tuple(x.shape[1:]) != self.image_size:
            raise ValueError(f"x must be (B, H, W) images with (H, W) = {self.image_size}, got {tuple(x.shape)}")
        b, p = x.shape[0], self.patch_size
        gh, gw = self.grid
        # (B, H, W) -> (B, gh, p, gw, p) -> (B, gh, gw, p, p) -> (B, T, p*p)
        patches = x.reshape(b, gh, p, gw, p).permute(0, 1, 3, 2, 4).reshape(b, gh * gw, p * p)
        pos = (self.row[:, None, :] + self.col[None, :, :]).reshape(gh * gw, self.d_model)  # (T, D)
        tokens = self.proj(patches) + pos
        ids = (torch.arange(gh * gw, device=x.device) + self.id_offset).expand(b, -1)
        mask = torch.ones(b, gh * gw, dtype=torch.bool, device=x.device)
        return Tokens(tokens=tokens, mask=mask, token_ids=ids, sense=self.sense)
