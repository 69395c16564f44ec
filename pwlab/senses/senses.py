"""All senses of a task list behind one module: the model's front end.

One encoder per sense present (image, audio, text), shared by that sense's tasks, and one
tabular encoder per table (tables differ in their features): keyed by the task's name, or
by ``meta["table"]`` where tasks read the same table (the MMoE pair shares its inputs, so
it shares its feature embedding, as the shared bottom of Ma et al. 2018 does). ``token_ids`` ranges
are laid end to end in :data:`SENSES` order, tabular tables in task order, so no two
encoders share an id (``num_token_ids`` is the total, what a hash router hashes over).
"""
from __future__ import annotations

from collections.abc import Iterable, Sequence

import torch
from torch import Tensor, nn

from pwlab import _checks
from pwlab.senses._common import check_d_model
from pwlab.senses.audio import AudioEncoder
from pwlab.senses.base import SENSES, Tokens
from pwlab.senses.image import ImageEncoder
from pwlab.senses.tabular import TabularEncoder
from pwlab.senses.text import TextEncoder


def _one_value(tasks, what: str, value_of):
    # tasks of one sense share an encoder, so they must agree on its size
    values = {value_of(t) for t in tasks}
    if len(values) != 1:
        raise ValueError(f"tasks {[t.name for t in tasks]} must agree on {what} to share an encoder, got {sorted(values)}")
    return values.pop()


def _vocab_size(t) -> int:
    if "vocab_size" not in t.meta:
        raise ValueError(f"text task {t.name!r} must record meta['vocab_size'] (see pwlab.tasks.text.vocab_size)")
    return t.meta["vocab_size"]


class Senses(nn.Module):
    """The encoders for ``tasks``, all with the same ``d_model``.

    Args:
        tasks: the tasks (not empty); their training inputs' shapes size the encoders
            (text tasks also give ``meta["vocab_size"]``).
        d_model: token width D of every encoder.
        patch_size: image patch side.

    ``forward(x, task)`` encodes one task's inputs (shapes as in :mod:`pwlab.tasks.base`)
    into :class:`Tokens` (B, T, D).
    """

    def __init__(self, tasks: Sequence, d_model: int, *, patch_size: int = 2):
        super().__init__()
        if isinstance(tasks, (str, bytes)) or not isinstance(tasks, Iterable) \
                or not all(hasattr(t, "sense") and hasattr(t, "name") for t in tasks):
            raise TypeError(f"tasks must be a list of pwlab Task objects (e.g. pwlab.tasks.load(['wine'])), "
                            f"got {tasks!r:.80}")
        _checks.positive_int("patch_size", patch_size)
        tasks = list(tasks)
        if not tasks:
            raise ValueError("tasks must hold at least one Task, got an empty list")
        self.d_model = check_d_model(d_model)
        self.encoders = nn.ModuleDict()   # by sense: image, audio, text
        self.tabular = nn.ModuleDict()    # by table: meta["table"], else the task name
        self.task_sense: dict[str, str] = {}
        self._table: dict[str, str] = {}
        offset = 0
        for sense in SENSES:
            group = [t for t in tasks if t.sense == sense]
            if not group:
                continue
            if sense == "image":
                size = _one_value(group, "the image size (H, W)", lambda t: tuple(t.x_train.shape[1:]))
                enc = ImageEncoder(d_model, size, patch_size, id_offset=offset)
            elif sense == "audio":
                length = _one_value(group, "the waveform length L", lambda t: t.x_train.shape[1])
                enc = AudioEncoder(d_model, length, id_offset=offset)
            elif sense == "text":
                enc = TextEncoder(d_model, _one_value(group, "meta['vocab_size']", _vocab_size),
                                  max(t.x_train.shape[1] for t in group), id_offset=offset)
            if sense != "tabular":
                self.encoders[sense] = enc
                offset += enc.num_ids
            else:
                for t in group:
                    key = self._table[t.name] = t.meta.get("table", t.name)
                    num_features = t.x_train.shape[1]
                    if key in self.tabular:
                        if self.tabular[key].num_features != num_features:
                            raise ValueError(f"tasks reading table {key!r} must agree on the feature count F")
                        continue
                    self.tabular[key] = TabularEncoder(d_model, num_features, id_offset=offset)
                    offset += num_features
            for t in group:
                self.task_sense[t.name] = sense
        unknown = [t.name for t in tasks if t.sense not in SENSES]
        if unknown:
            raise ValueError(f"tasks {unknown} have a sense outside {SENSES}")
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
            Tokens with tokens (B, T, D), mask (B, T), token_ids (B, T), sense.
        """
        encoder = self.encoder(task)
        if isinstance(x, torch.Tensor):
            # checked here, where the task is known, rather than as NaN tokens in every later layer
            for p in encoder.parameters():
                _checks.same_device("x", x, p.device)
                break
            _checks.finite_tensor("x", x)
        return encoder(x)


def pad_cat(parts: Sequence[Tokens]) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Stack several tasks' tokens into one batch, right-padding to the longest T.

    Args:
        parts: Tokens with tokens (B_i, T_i, D).
    Returns:
        tokens (sum B_i, max T_i, D) with zeros at padding, mask (same, bool; False at
        padding), token_ids (padding -1), sense (sum B_i,) long.
    """
    if not parts:
        raise ValueError("parts must hold at least one Tokens, got an empty list")
    t_max = max(p.tokens.shape[1] for p in parts)
    tokens, mask, ids, sense = [], [], [], []
    for p in parts:
        pad = t_max - p.tokens.shape[1]
        tokens.append(nn.functional.pad(p.tokens, (0, 0, 0, pad)))
        mask.append(nn.functional.pad(p.mask, (0, pad), value=False))
        ids.append(nn.functional.pad(p.token_ids, (0, pad), value=-1))
        sense.append(torch.full((p.tokens.shape[0],), p.sense, dtype=torch.long, device=p.tokens.device))
    return torch.cat(tokens), torch.cat(mask), torch.cat(ids), torch.cat(sense)
