"""Token exchange between ranks: all-to-all with uneven splits, differentiable.

Index legend: P ranks in the group, R rows received, D row width.

GShard (Lepikhin et al. 2020, §2.2) dispatches tokens to the devices that hold their experts
with one all-to-all and brings the results back with a second one. We use
``torch.distributed.all_to_all_single`` with uneven splits: each rank first learns how many
rows every other rank will send it (a small all-to-all of counts), then the rows travel.

The backward of an all-to-all is the all-to-all in the other direction (the same splits,
swapped), so gradients flow back to the rank that sent each row.

Bytes that leave a rank are counted only while a :func:`count_a2a_bytes` block is open —
the measurement is explicit, nothing is recorded on modules.
"""
from __future__ import annotations

import math
from contextlib import contextmanager
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import Tensor


@dataclass
class A2ATraffic:
    """Bytes this rank sent to *other* ranks by all-to-all (its own chunk is a local copy)."""

    bytes_sent: int = 0
    calls: int = 0


_OPEN: list[A2ATraffic] = []


@contextmanager
def count_a2a_bytes():
    """``with count_a2a_bytes() as t: ...`` then ``t.bytes_sent``: forward and backward exchanges."""
    traffic = A2ATraffic()
    _OPEN.append(traffic)
    try:
        yield traffic
    finally:
        _OPEN.remove(traffic)


def _record(send_splits: list[int], row_bytes: int, group) -> None:
    if not _OPEN:
        return
    me = dist.get_rank(group)
    sent = sum(s for j, s in enumerate(send_splits) if j != me) * row_bytes
    for t in _OPEN:
        t.bytes_sent += sent
        t.calls += 1


def _row_bytes(x: Tensor) -> int:
    return math.prod(x.shape[1:]) * x.element_size()


def _a2a(x: Tensor, send_splits: list[int], recv_splits: list[int], group) -> Tensor:
    out = x.new_empty((sum(recv_splits),) + tuple(x.shape[1:]))
    dist.all_to_all_single(out, x.contiguous(), recv_splits, send_splits, group=group)
    _record(send_splits, _row_bytes(x), group)
    return out


class _AllToAll(torch.autograd.Function):
    """Rows of ``x`` split by ``send_splits`` go to ranks 0..P-1; backward sends gradients home."""

    @staticmethod
    def forward(ctx, x: Tensor, send_splits: list[int], recv_splits: list[int], group) -> Tensor:
        ctx.send_splits, ctx.recv_splits, ctx.group = send_splits, recv_splits, group
        return _a2a(x, send_splits, recv_splits, group)

    @staticmethod
    def backward(ctx, grad: Tensor):
        return _a2a(grad, ctx.recv_splits, ctx.send_splits, ctx.group), None, None, None


def all_to_all(x: Tensor, send_splits: list[int], recv_splits: list[int], group=None) -> Tensor:
    """Differentiable uneven all-to-all: ``x (sum(send_splits), ...) -> (sum(recv_splits), ...)``.

    Every rank must call this the same number of times, and — when gradients are enabled —
    every rank must also run the backward. So that a rank with nothing to differentiate
    (no rows, or an input that does not require grad) still joins the backward exchange,
    the input is then made a leaf that requires grad.
    """
    if torch.is_grad_enabled() and not x.requires_grad:
        x = x.detach().requires_grad_(True)
    return _AllToAll.apply(x, list(send_splits), list(recv_splits), group)


def exchange_counts(counts: Tensor, group=None) -> Tensor:
    """``counts (P·L,)``: chunk j (L entries) goes to rank j; returns what each rank sent us, (P·L,)."""
    p = dist.get_world_size(group)
    chunk = counts.numel() // p
    return _a2a(counts.contiguous(), [chunk] * p, [chunk] * p, group)
