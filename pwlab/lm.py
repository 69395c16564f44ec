"""A character-level language model whose feed-forward blocks are MoE layers: which expert
does each character go to?

    corpus(seed) ─ lines in five styles (English, Spanish, dates, sums, code), synthesized
      ─ CharTokenizer: one id per character          (both in :mod:`pwlab.lm_corpus`)
      ─ CharMoELM: embedding + position ─ L × [pre-norm causal attention + MoE FFN] ─ logits
      ─ LMOutput.experts: the first-choice expert of every character in every MoE layer

ST-MoE (Zoph et al. 2022) found encoder experts that specialise in punctuation, numbers,
proper names or verbs. :func:`class_counts` and :func:`class_mutual_information`
measure the same thing in miniature: I(expert; token class) in bits, where the class of a
character is one of :data:`CLASSES`.

Index legend: B sequences, T characters per sequence (the context), V vocabulary size,
D d_model, E experts, L MoE layers, K token classes.
"""
from __future__ import annotations

import math
import os
from collections import Counter
from dataclasses import dataclass
from functools import cached_property

import torch
from torch import Tensor, nn
from torch.nn import functional as F
from tqdm.auto import tqdm

from pwlab import _checks
# the data lives in pwlab.lm_corpus; re-exported here, where notebook 10 and the CLI read it
from pwlab.lm_corpus import CLASSES, STYLES, CharTokenizer, corpus, token_class, train_val_split  # noqa: F401
from pwlab.moe import MoE
from pwlab.moe_stats import MoEStats
from pwlab.pathways import mutual_information
from pwlab.routing import ROUTERS, make_router

# -- the model -----------------------------------------------------------------------------
class CausalSelfAttention(nn.Module):
    """Multi-head self-attention where position t sees positions ≤ t only."""

    def __init__(self, d_model: int, num_heads: int):
        super().__init__()
        if d_model % num_heads:
            raise ValueError(f"num_heads must divide d_model={d_model}, got num_heads={num_heads}")
        self.num_heads = num_heads
        self.qkv, self.proj = nn.Linear(d_model, 3 * d_model), nn.Linear(d_model, d_model)

    def forward(self, x: Tensor) -> Tensor:
        b, t, d = x.shape
        q, k, v = self.qkv(x).view(b, t, 3, self.num_heads, d // self.num_heads).permute(2, 0, 3, 1, 4)
        y = F.scaled_dot_product_attention(q, k, v, is_causal=True)          # (B, heads, T, D/heads)
        return self.proj(y.transpose(1, 2).reshape(b, t, d))


class _Block(nn.Module):
    def __init__(self, d_model: int, num_heads: int, moe: MoE):
        super().__init__()
        self.ln1, self.ln2 = nn.LayerNorm(d_model), nn.LayerNorm(d_model)
        self.attn, self.moe = CausalSelfAttention(d_model, num_heads), moe

    def forward(self, x: Tensor, ids: Tensor, generator) -> tuple[Tensor, MoEStats]:
        x = x + self.attn(self.ln1(x))
        y, stats = self.moe(self.ln2(x), token_ids=ids, generator=generator)
        return x + y, stats


@dataclass(frozen=True, eq=False)
class LMOutput:
    """One forward pass: ``logits (B, T, V)``, the loss when targets were given (cross-entropy
    in nats, plus ``aux_loss``, the MoE layers' weighted auxiliary losses) and each layer's
    :class:`~pwlab.moe.MoEStats` (its routing covers the B·T characters in row-major order)."""

    logits: Tensor
    moe_stats: tuple[MoEStats, ...]
    aux_loss: Tensor
    lm_loss: Tensor | None = None

    @property
    def loss(self) -> Tensor | None:
        return None if self.lm_loss is None else self.lm_loss + self.aux_loss

    @cached_property
    def experts(self) -> Tensor:
        """(L, B, T) long: per layer, the expert with the largest combine weight for each
        character (its first choice under top-k), −1 where no expert took it (expert choice, capacity)."""
        b, t = self.logits.shape[:2]
        return torch.stack([first_choice(s.routing, b * t).view(b, t) for s in self.moe_stats])


def first_choice(routing, num_tokens: int) -> Tensor:
    """(N,) long: each token's expert of largest weight in ``routing``, −1 for a token with no assignment."""
    w = torch.full((num_tokens, routing.num_experts), -1.0)
    w[routing.token.cpu(), routing.expert.cpu()] = routing.weight.detach().float().cpu()
    best, expert = w.max(1)
    return torch.where(best >= 0, expert, torch.full_like(expert, -1))


class CharMoELM(nn.Module):
    """A small character-level transformer LM whose every feed-forward block is an MoE layer.

    Args:
        vocab: a :class:`CharTokenizer` (or the string of its characters).
        d_model: D. num_layers: L blocks, each attention + MoE FFN. num_experts: E per layer.
        router: a router name of :data:`pwlab.routing.ROUTERS`, built once per layer with
            ``router_kwargs`` (default ``"topk"`` with top_k=2); ``"hash"`` routes by character id.
        num_heads: attention heads. context: the longest sequence T. d_hidden: each expert's
            hidden width (default 2·D). capacity_factor, aux_weights: passed to each :class:`MoE`.
    """

    def __init__(self, vocab, d_model: int = 64, num_layers: int = 2, num_experts: int = 8, router: str = "topk",
                 *, router_kwargs: dict | None = None, num_heads: int = 4, context: int = 64,
                 d_hidden: int | None = None, capacity_factor: float | None = None, aux_weights: dict | None = None):
        super().__init__()
        self.tokenizer = vocab if isinstance(vocab, CharTokenizer) else CharTokenizer(vocab)
        _checks.positive_int("d_model", d_model)
        _checks.positive_int("num_layers", num_layers)
        self.context = _checks.positive_int("context", context)
        self.router_name = _checks.one_of("router", router, [r for r in ROUTERS if r != "task"])
        kwargs = {"top_k": 2} if router_kwargs is None and router in ("topk", "noisy_topk") else dict(router_kwargs or {})
        v = len(self.tokenizer)
        self.embed = nn.Embedding(v, d_model)
        self.pos = nn.Parameter(torch.randn(context, d_model) * 0.02)          # (T_max, D)
        self.blocks = nn.ModuleList(
            _Block(d_model, num_heads, MoE(d_model, d_hidden or 2 * d_model, num_experts,
                                           make_router(router, **self._layer_kwargs(kwargs, i)),
                                           capacity_factor=capacity_factor, aux_weights=aux_weights))
            for i in range(num_layers))
        self.norm, self.head = nn.LayerNorm(d_model), nn.Linear(d_model, v)
        # near-zero logits at initialisation: every character starts equally likely (loss ≈ ln V)
        nn.init.normal_(self.head.weight, std=0.02)
        nn.init.zeros_(self.head.bias)
        self.num_experts = num_experts

    def _layer_kwargs(self, kwargs: dict, layer: int) -> dict:
        # hash tables seeded alike would send a character to the same expert in every layer
        if self.router_name == "hash":
            return {**kwargs, "seed": kwargs.get("seed", 0) + layer}
        return kwargs

    def forward(self, idx: Tensor, targets: Tensor | None = None, *, generator=None) -> LMOutput:
        """idx (B, T) long ids with T ≤ context; targets (B, T) the next ids (optional)."""
        if idx.dim() != 2 or idx.shape[1] > self.context:
            raise ValueError(f"idx must be (B, T) with T <= context={self.context}, got shape {tuple(idx.shape)}")
        x = self.embed(idx) + self.pos[: idx.shape[1]]                       # (B, T, D)
        stats = []
        for block in self.blocks:
            x, s = block(x, idx, generator)
            stats.append(s)
        logits = self.head(self.norm(x))                                     # (B, T, V)
        aux = sum((s.aux_loss for s in stats), logits.new_zeros(()))
        lm = None if targets is None else F.cross_entropy(logits.flatten(0, 1), targets.flatten())
        return LMOutput(logits=logits, moe_stats=tuple(stats), aux_loss=aux, lm_loss=lm)


# -- training and evaluation ---------------------------------------------------------------
def _windows(data: Tensor, context: int) -> tuple[Tensor, Tensor]:
    """Non-overlapping windows: inputs and next-character targets (W, context) covering data[1:]."""
    n = (data.numel() - 1) // context
    if n < 1:
        raise ValueError(f"data must hold more than context={context} ids, got {data.numel()}")
    x = data[: n * context].view(n, context)
    return x, data[1: n * context + 1].view(n, context)


@torch.no_grad()
def lm_loss(model: CharMoELM, data: Tensor, batch_size: int = 64) -> float:
    """Mean next-character cross-entropy (nats) of ``model`` over ``data`` (ids), in eval mode,
    on non-overlapping windows of the model's context."""
    was = model.training
    model.eval()
    try:
        x, y = _windows(data, model.context)
        total = 0.0
        for i in range(0, x.shape[0], batch_size):
            total += float(model(x[i:i + batch_size], y[i:i + batch_size]).lm_loss) * x[i:i + batch_size].numel()
        return total / x.numel()
    finally:
        model.train(was)


def train_lm(model: CharMoELM, data: Tensor, steps: int, *, batch_size: int = 32, lr: float = 3e-3,
             seed: int = 0, val: Tensor | None = None, eval_every: int = 0, progress: bool = True) -> list[dict]:
    """Train ``model`` on random windows of ``data`` (ids) with AdamW; returns the history.

    Each step samples ``batch_size`` windows of the model's context from a generator seeded
    with ``seed`` and takes one AdamW step on the cross-entropy plus the MoE auxiliary losses;
    the learning rate warms up over the first 5 % of the steps, then decays to zero
    (cosine), the usual recipe for a short run. Records: ``{"step", "loss", "aux_loss"}``
    every step, plus ``"val_loss"`` every ``eval_every`` steps and at the end when ``val``
    is given. The progress bar (tqdm) honours ``TQDM_DISABLE=1``.
    """
    _checks.positive_int("steps", steps)
    _checks.positive_int("batch_size", batch_size)
    t = model.context
    if data.numel() <= t:
        raise ValueError(f"data must hold more than context={t} ids, got {data.numel()}")
    g = torch.Generator().manual_seed(seed)
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.01)
    warm = max(1, steps // 20)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: min(1.0, (s + 1) / warm) * 0.5 * (1 + math.cos(math.pi * min(s, steps) / steps)))
    history = []
    model.train()
    # an explicit disable= overrides tqdm's TQDM_DISABLE default, so read it here
    quiet = not progress or os.environ.get("TQDM_DISABLE", "").lower() in ("1", "true")
    with tqdm(total=steps, disable=quiet, desc="train", leave=False) as bar:
        for step in range(1, steps + 1):
            start = torch.randint(0, data.numel() - t, (batch_size,), generator=g)
            rows = start[:, None] + torch.arange(t + 1)                      # (B, T+1)
            chunk = data[rows]
            out = model(chunk[:, :-1], chunk[:, 1:], generator=g)
            opt.zero_grad(set_to_none=True)
            out.loss.backward()
            opt.step()
            sched.step()
            rec = {"step": step, "loss": out.lm_loss.item(), "aux_loss": out.aux_loss.item()}
            if val is not None and ((eval_every and step % eval_every == 0) or step == steps):
                rec["val_loss"] = lm_loss(model, val)
            history.append(rec)
            bar.update(1)
            bar.set_postfix(loss=f"{rec['loss']:.3f}", refresh=False)
    return history


def unigram_loss(train: str, val: str, alpha: float = 1.0) -> float:
    """Cross-entropy (nats per character) of ``val`` under the character frequencies of ``train``,
    add-``alpha`` smoothed over the characters of both: p(c) = (n(c) + α) / (N + α·V).

    The baseline a language model must beat: it knows how common each character is, nothing
    of its context.
    """
    _checks.non_negative_float("alpha", alpha)
    if not train or not val:
        raise ValueError("train and val must be non-empty strings")
    counts = Counter(train)
    v = len(set(train) | set(val))
    if alpha == 0 and any(c not in counts for c in val):
        raise ValueError("val holds characters absent from train: alpha must be > 0")
    denom = len(train) + alpha * v
    return -sum(math.log((counts[c] + alpha) / denom) for c in val) / len(val)


@torch.no_grad()
def generate(model: CharMoELM, prompt: str, n: int, generator: torch.Generator, temperature: float = 1.0) -> str:
    """``prompt`` followed by ``n`` characters sampled from ``model`` (eval mode) with ``generator``."""
    _checks.positive_int("n", n, minimum=0)
    _checks.positive_float("temperature", temperature)
    if not isinstance(generator, torch.Generator):
        raise TypeError(f"generator must be a torch.Generator, got {type(generator).__name__}")
    was = model.training
    model.eval()
    try:
        start = prompt or "\n"             # an empty prompt starts a new line
        ids = model.tokenizer.encode(start)
        for _ in range(n):
            logits = model(ids[-model.context:][None]).logits[0, -1] / temperature
            nxt = torch.multinomial(logits.softmax(-1), 1, generator=generator)
            ids = torch.cat([ids, nxt])
        return prompt + model.tokenizer.decode(ids[len(start):])
    finally:
        model.train(was)


# -- which expert each character goes to ----------------------------------------------------
@torch.no_grad()
def char_experts(model: CharMoELM, text: str) -> Tensor:
    """(L, len(text)) long: the first-choice expert of each character of ``text`` per MoE layer
    (eval mode; the text is cut into consecutive windows of the model's context, so a
    character sees the preceding characters of its window)."""
    was = model.training
    model.eval()
    try:
        ids = model.tokenizer.encode(text)
        out = []
        for i in range(0, ids.numel(), model.context):
            out.append(model(ids[i:i + model.context][None]).experts[:, 0])
        return torch.cat(out, dim=1)
    finally:
        model.train(was)


def class_counts(experts: Tensor, classes: Tensor, num_experts: int) -> Tensor:
    """(E, K) long: how many characters of each class (``classes (N,)``, indices into
    :data:`CLASSES`) went to each expert (``experts (N,)``; −1, unrouted, is left out)."""
    if experts.shape != classes.shape:
        raise ValueError(f"experts and classes must have the same shape, got {tuple(experts.shape)} and "
                         f"{tuple(classes.shape)}")
    keep = experts >= 0
    k = len(CLASSES)
    return torch.bincount(experts[keep] * k + classes[keep], minlength=num_experts * k).view(num_experts, k)


def class_mutual_information(model: CharMoELM, text: str) -> list[float]:
    """I(expert; token class) in bits per MoE layer, over the characters of ``text``
    (:func:`pwlab.pathways.mutual_information` of :func:`class_counts`)."""
    experts = char_experts(model, text)
    classes = model.tokenizer.classes()[model.tokenizer.encode(text)]
    return [mutual_information(class_counts(e, classes, model.num_experts)) for e in experts]


def character_share(experts: Tensor, ids: Tensor, vocab_size: int, num_experts: int) -> float:
    """The share of the characters that go to their character's most common expert.

    1 when the expert is a function of the character alone (hash routing); lower as the
    context (position, neighbours) sways the router. ``experts (N,)`` first choices (−1,
    unrouted, counts as a miss), ``ids (N,)`` the characters' ids.
    """
    if experts.shape != ids.shape:
        raise ValueError(f"experts and ids must have the same shape, got {tuple(experts.shape)} and {tuple(ids.shape)}")
    if ids.numel() == 0:
        return 0.0
    keep = experts >= 0
    table = torch.bincount(ids[keep] * num_experts + experts[keep], minlength=vocab_size * num_experts)
    return float(table.view(vocab_size, num_experts).max(1).values.sum()) / ids.numel()
