"""The all-to-all cost of one expert-parallel MoE layer: bytes that cross between devices.

Index legend: N tokens over all devices, D d_model, k experts per token, E experts,
P devices, b bytes per element.

With tokens spread evenly over P devices and routing balanced, an assignment's expert lives
on another device with probability (P−1)/P. Every such kept assignment travels twice in the
forward pass (its token to the expert — dispatch; the result back — combine) and twice again
in the backward pass (the reverse all-to-alls carry the gradients), each time one row of D
elements (GShard, Lepikhin et al. 2020, §2.2; Switch Transformer §2.2 on capacity). Before
the rows move, each device tells each other device how many rows to expect per expert:
E/P counts of 8 bytes per pair of devices.

    bytes = 8·E·(P−1)                                     (counts, forward only)
          + (2 + 2·[backward]) · R · D · b,   R = A·(P−1)/P remote assignments, A = N·k·kept

So the volume grows linearly in tokens, d_model and k, approaches its ceiling as P grows
((P−1)/P → 1), and does not depend on E except through the counts and capacity. Compute per
device grows like N·k·D·H/P: adding devices shrinks compute faster than communication.
"""
from __future__ import annotations

from pwlab import _checks

COUNT_BYTES = 8   # counts travel as int64


def a2a_volume(num_tokens: int, d_model: int, top_k: int, num_experts: int, world_size: int, *,
               bytes_per_element: int = 4, backward: bool = True, kept_fraction: float = 1.0,
               remote_assignments: float | None = None) -> dict[str, float]:
    """Bytes sent between devices by one MoE layer in one step, summed over the P devices.

    Args:
        num_tokens: N, tokens over all devices.
        d_model: D.
        top_k: k, assignments per token before capacity.
        num_experts: E (divisible by P).
        world_size: P.
        bytes_per_element: b (4 for float32, 2 for bfloat16).
        backward: include the backward pass's two reverse all-to-alls.
        kept_fraction: fraction of the N·k assignments kept after capacity (1 when dropless).
        remote_assignments: the exact number of kept assignments whose expert is on another
            device, when known (measured); default: the balanced expectation A·(P−1)/P.

    Returns:
        dict with ``counts``, ``dispatch``, ``combine`` and ``total`` bytes (dispatch/combine
        include their backward halves when ``backward``), and ``remote_assignments``.
    """
    _checks.positive_int("num_tokens", num_tokens, minimum=0)
    _checks.positive_int("d_model", d_model)
    _checks.positive_int("top_k", top_k)
    _checks.positive_int("num_experts", num_experts)
    _checks.positive_int("world_size", world_size)
    _checks.positive_int("bytes_per_element", bytes_per_element)
    if num_experts % world_size:
        raise ValueError(f"num_experts must be divisible by world_size={world_size}, got {num_experts}")
    if not 0.0 <= kept_fraction <= 1.0:
        raise ValueError(f"kept_fraction must be in [0, 1], got {kept_fraction!r}")
    p = world_size
    if remote_assignments is None:
        remote_assignments = num_tokens * top_k * kept_fraction * (p - 1) / p
    passes = 2 if backward else 1
    row = d_model * bytes_per_element
    counts = float(COUNT_BYTES * num_experts * (p - 1))
    dispatch = float(passes * remote_assignments * row)
    return {"counts": counts, "dispatch": dispatch, "combine": dispatch, "total": counts + 2 * dispatch,
            "remote_assignments": float(remote_assignments)}


def a2a_bytes(num_tokens: int, d_model: int, top_k: int, num_experts: int, world_size: int, **kw) -> float:
    """Total of :func:`a2a_volume`: bytes per MoE layer per step over all devices."""
    return a2a_volume(num_tokens, d_model, top_k, num_experts, world_size, **kw)["total"]
