"""The sense contract: an encoder turns one task's inputs into tokens in the shared space.

Every encoder returns :class:`Tokens` with one ``d_model`` for all senses, so one trunk
takes them all.
"""
from __future__ import annotations

from dataclasses import dataclass

from torch import Tensor

#: sense ids, in this order everywhere (pathway maps, LIMoE groups, figures)
SENSES = ("image", "audio", "text", "tabular")


@dataclass(frozen=True, eq=False)
class Tokens:
    """Encoded inputs.

    Attributes:
        tokens: (B, T, D) float.
        mask: (B, T) bool, True for real tokens (False = padding).
        token_ids: (B, T) long, a discrete id per token (characters for text; patch, frame
            or feature index otherwise), offset per sense so ids of different senses differ —
            what hash routing hashes.
        sense: index into :data:`SENSES`.
    """

    tokens: Tensor
    mask: Tensor
    token_ids: Tensor
    sense: int
