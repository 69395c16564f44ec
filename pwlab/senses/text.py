"""Text sense: character embedding plus learned positions; padding (id 0) is masked out."""
from __future__ import annotations

from torch import Tensor, nn

from pwlab._checks import positive_int
from pwlab.senses._common import check_d_model, check_input, positions
from pwlab.senses.base import SENSES, Tokens


class TextEncoder(nn.Module):
    """(B, L) character ids -> one token per character.

    Args:
        d_model: token width D.
        vocab_size: number of ids including padding 0 (``pwlab.tasks.text.vocab_size``).
        max_len: longest L accepted.
        id_offset: added to the character id to form ``token_ids`` (so the same character
            gets the same id, hence the same hash route, in every text task).

    Shapes: x (B, L), L <= max_len -> tokens (B, L, D), mask (B, L) = (x != 0).
    """

    sense = SENSES.index("text")

    def __init__(self, d_model: int, vocab_size: int, max_len: int = 32, id_offset: int = 0):
        super().__init__()
        self.d_model = check_d_model(d_model)
        self.vocab_size = positive_int("vocab_size", vocab_size, minimum=2)
        self.max_len = positive_int("max_len", max_len)
        self.num_ids = vocab_size
        self.id_offset = id_offset
        self.embed = nn.Embedding(vocab_size, d_model, padding_idx=0)
        self.pos = positions(max_len, d_model)

    def forward(self, x: Tensor) -> Tokens:
        check_input(x, dims=2, what=f"(B, L) character ids with L <= {self.max_len}", floating=False)
        if x.shape[1] > self.max_len:
            raise ValueError(f"x must be (B, L) character ids with L <= max_len={self.max_len}, got {tuple(x.shape)}")
        if x.numel() and (int(x.min()) < 0 or int(x.max()) >= self.vocab_size):
            raise ValueError(f"x must hold ids in [0, vocab_size={self.vocab_size}), got range "
                             f"[{int(x.min())}, {int(x.max())}]")
        x = x.long()
        tokens = self.embed(x) + self.pos[: x.shape[1]]          # (B, L, D)
        return Tokens(tokens=tokens, mask=x != 0, token_ids=x + self.id_offset, sense=self.sense)
