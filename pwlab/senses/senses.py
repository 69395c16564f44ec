"""All senses of a task list behind one module: the model's front end.

One encoder per sense present (image, audio, text), shared by that sense's tasks, and one
tabular encoder per table (tables differ in their features): keyed by the task's name, or
by ``meta["table"]`` where tasks read the same table (the MMoE pair shares its inputs, so
it shares its feature embedding, as the shared bottom of Ma et al. 2018 does). ``token_ids`` ranges
are laid end to end in :data:`MODALITIES` order, tabular tables in task order, so no two
encoders share an id (``num_token_ids`` is the total, what a hash router hashes over).
"""
from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

from pwlab.senses._common import check_d_model
from pwlab.senses.audio import AudioEncoder
from pwlab.senses.base import MODALITIES, Tokens
from pwlab.senses.image import ImageEncoder
from pwlab.senses.tabular import TabularEncoder
from pwlab.senses.text import TextEncoder


def _one_value(tasks, key: str, sense: str):
    values = {tuple(t.meta[key]) if isinstance(t.meta[key], (list, tuple)) else t.meta[key] for t in tasks}
    if len(values) != 1:
        raise ValueError(f"tasks of sense {sense!r} must agree on meta[{key!r}] to share an encoder, got {sorted(values)}")
    return values.pop()


class Senses(nn.Module):
    """The encoders for ``tasks``, all with the same ``d_model``.

    Args:
        tasks: the tasks (not empty); their ``meta`` sizes the encoders.
        d_model: token width D of every encoder.
        patch_size: image patch side.

    ``forward(x, task)`` encodes one task's inputs (shapes as in :mod:`pwlab.tasks.base`)
    into :class:`Tokens` (B, T, D).
    """

    def __init__(self, tasks: Sequence, d_model: int, *, patch_size: int = 2):
        super().__init__()
        tasks = list(tasks)
        if not tasks:
            raise ValueError("tasks must hold at least one Task, got an empty list")
        self.d_model = check_d_model(d_model)
        self.encoders = nn.ModuleDict()   # by sense: image, audio, text
        self.tabular = nn.ModuleDict()    # by table: meta["table"], else the task name
        self.task_sense: dict[str, str] = {}
        self._table: dict[str, str] = {}
        offset = 0
        for sense in MODALITIES:
            group = [t for t in tasks if t.sense == sense]
            if not group:
                continue
            if sense == "image":
                enc = ImageEncoder(d_model, _one_value(group, "image_size", sense), patch_size, id_offset=offset)
            elif sense == "audio":
                enc = AudioEncoder(d_model, _one_value(group, "length", sense), id_offset=offset)
            elif sense == "text":
                enc = TextEncoder(d_model, _one_value(group, "vocab_size", sense),
                                  max(t.meta["length"] for t in group), id_offset=offset)
            if sense != "tabular":
                self.encoders[sense] = enc
                offset += enc.num_ids
            else:
                for t in group:
                    key = self._table[t.name] = t.meta.get("table", t.name)
                    if key in self.tabular:
                        if self.tabular[key].num_features != t.meta["num_features"]:
                            raise ValueError(f"tasks reading table {key!r} must agree on meta['num_features']")
                        continue
                    self.tabular[key] = TabularEncoder(d_model, t.meta["num_features"], id_offset=offset)
                    offset += t.meta["num_features"]
            for t in group:
                self.task_sense[t.name] = sense
        unknown = [t.name for t in tasks if t.sense not in MODALITIES]
        if unknown:
            raise ValueError(f"tasks {unknown} have a sense outside {MODALITIES}")
        self.num_token_ids = offset

    def encoder(self, task) -> nn.Module:
        """The encoder that reads ``task`` (a Task or its name)."""
        name = task if isinstance(task, str) else task.name
        if name not in self.task_sense:
            raise ValueError(f"task {name!r} is not one of this Senses' tasks: {', '.join(self.task_sense)}")
        sense = self.task_sense[name]
        return self.tabular[self._table[name]] if sense == "tabular" else self.encoders[sense]

    def forward(self, x: Tensor, task) -> Tokens:
        """Encode one task's batch.

        Args:
            x: the task's inputs, (B, ...) as in :mod:`pwlab.tasks.base`.
            task: a Task or a task name.
        Returns:
            Tokens with tokens (B, T, D), mask (B, T), token_ids (B, T), modality.
        """
        return self.encoder(task)(x)


def pad_cat(parts: Sequence[Tokens]) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Stack several tasks' tokens into one batch, right-padding to the longest T.

    Args:
        parts: Tokens with tokens (B_i, T_i, D).
    Returns:
        tokens (sum B_i, max T_i, D) with zeros at padding, mask (same, bool; False at
        padding), token_ids (padding -1), modality (sum B_i,) long.
    """
    if not parts:
        raise ValueError("parts must hold at least one Tokens, got an empty list")
    t_max = max(p.tokens.shape[1] for p in parts)
    tokens, mask, ids, modality = [], [], [], []
    for p in parts:
        pad = t_max - p.tokens.shape[1]
        tokens.append(nn.functional.pad(p.tokens, (0, 0, 0, pad)))
        mask.append(nn.functional.pad(p.mask, (0, pad), value=False))
        ids.append(nn.functional.pad(p.token_ids, (0, pad), value=-1))
        modality.append(torch.full((p.tokens.shape[0],), p.modality, dtype=torch.long, device=p.tokens.device))
    return torch.cat(tokens), torch.cat(mask), torch.cat(ids), torch.cat(modality)
