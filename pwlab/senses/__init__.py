"""Senses: one encoder per input kind, all mapping to tokens (B, T, D) of one ``d_model``.

    image    (B, H, W)  -> patch tokens        ImageEncoder
    audio    (B, L)     -> STFT frame tokens   AudioEncoder
    text     (B, L) ids -> character tokens    TextEncoder
    tabular  (B, F)     -> feature tokens      TabularEncoder
"""
from pwlab.senses.audio import AudioEncoder
from pwlab.senses.base import SENSES, Tokens
from pwlab.senses.image import ImageEncoder
from pwlab.senses.senses import Senses, pad_cat
from pwlab.senses.tabular import TabularEncoder
from pwlab.senses.text import TextEncoder

__all__ = ["SENSES", "Tokens", "Senses", "pad_cat", "ImageEncoder", "AudioEncoder", "TextEncoder",
           "TabularEncoder"]
