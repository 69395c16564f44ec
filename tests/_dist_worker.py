"""Functions run on each rank by tests/test_distributed.py (spawned processes import this module)."""
from __future__ import annotations

import copy

import torch
import torch.distributed as dist

from pwlab.distributed import ExpertParallelMoE, count_a2a_bytes, gather_routing
from pwlab.moe import MoE
from pwlab.routing import make_router

D, H = 8, 12


def _tokens(seed: int, sizes: list[int]):
    g = torch.Generator().manual_seed(seed)
    xs = [torch.randn(n, D, generator=g) for n in sizes]
    ts = [torch.randn(n, D, generator=g) for n in sizes]
    return xs, ts


def _max_err(a, b) -> float:
    """max |a − b|; a missing gradient counts as zeros (a rank's experts always get one, maybe zero)."""
    if b is None:
        b = torch.zeros_like(a)
    return float((a.detach() - b.detach()).abs().max()) if a.numel() else 0.0


def _run_ref(ref: MoE, x, t, sc, rank):
    """Single-process MoE on one rank's tokens: (x leaf, y, stats, loss)."""
    x = x.clone().requires_grad_(True)
    kw = {}
    if sc.get("noisy"):
        kw["generator"] = torch.Generator().manual_seed(100 + rank)
    if sc.get("mask"):
        kw["mask"] = torch.arange(x.shape[0]) % 3 != 1
    y, st = ref(x, **kw)
    return x, y, st, (y * t).sum() + st.aux_loss


def equivalence(rank: int, world: int, scenarios: list[dict]) -> dict:
    """For each scenario: max |EP − single process| of outputs and gradients, and global stats."""
    out = {}
    for sc in scenarios:
        name, e = sc["name"], sc["num_experts"]
        sizes = [sc["tokens"][r % len(sc["tokens"])] for r in range(world)]
        torch.manual_seed(sc.get("seed", 0))
        ref = MoE(D, H, e, make_router(sc["router"][0], **sc["router"][1]), capacity_factor=sc.get("capacity_factor"),
                  capacity_convention=sc.get("capacity_convention", "k_tokens"),
                  drop_policy=sc.get("drop_policy", "position"))
        ref.train(sc.get("noisy", False))
        ep = ExpertParallelMoE.from_moe(copy.deepcopy(ref))
        ep.train(sc.get("noisy", False))
        xs, ts = _tokens(sc.get("seed", 0) + 1, sizes)
        disabled = sc.get("disabled", [])
        if "idle_rank" in sc:             # switch off every expert of one rank: it receives no rows
            local = e // world
            disabled = list(range(sc["idle_rank"] * local, (sc["idle_rank"] + 1) * local))
        elif sc.get("disable_all"):       # nothing is kept anywhere
            disabled = list(range(e))

        # the oracle: the single-process layer called on each rank's tokens, losses summed
        with ref.disabled(disabled):
            refs = [_run_ref(ref, xs[r], ts[r], sc, r) for r in range(world)]
        sum(loss for *_, loss in refs).backward()

        with ep.disabled(disabled), count_a2a_bytes() as traffic:
            x, y, st, loss = _run_ref(ep, xs[rank], ts[rank], sc, rank)
            loss.backward()
        for p in ep.router.parameters():
            dist.all_reduce(p.grad)                       # data parallel: the replicated router's gradient
        x_ref, y_ref, _, _ = refs[rank]
        errs = {"y": _max_err(y, y_ref), "x_grad": _max_err(x.grad, x_ref.grad)}
        for (n, p), (_, q) in zip(ep.router.named_parameters(), ref.router.named_parameters()):
            errs[f"router.{n}.grad"] = _max_err(p.grad, q.grad)
        for n in ("w1", "b1", "w2", "b2"):
            g = getattr(ep.experts, n).grad
            parts = [torch.empty_like(g) for _ in range(world)]
            dist.all_gather(parts, g)
            errs[f"experts.{n}.grad"] = _max_err(torch.cat(parts), getattr(ref.experts, n).grad)
        w_full = ep.gather_experts()
        errs["experts.weights"] = max(_max_err(a, b) for a, b in zip(w_full, ref.experts.weights()))
        stats = [s for _, _, s, _ in refs]
        counts = sum(s.counts for s in stats)
        errs["counts"] = int((st.counts - counts).abs().max())
        errs["proposed_counts"] = int((st.proposed_counts - sum(s.proposed_counts for s in stats)).abs().max())
        if stats[0].routing.kind == "token_choice":
            proposed = sum(int(s.proposed_counts.sum()) for s in stats)
            dropped = 1 - int(counts.sum()) / max(proposed, 1)
            errs["dropped_fraction"] = abs(float(st.dropped_fraction) - dropped)
        glob = gather_routing(st)                          # pathway maps: every rank's kept routing
        mask_sizes = [s.proposed.num_tokens for s in stats]
        offsets = torch.tensor([0] + mask_sizes).cumsum(0)
        ref_token = torch.cat([s.routing.token + int(offsets[r]) for r, s in enumerate(stats)])
        ref_expert = torch.cat([s.routing.expert for s in stats])
        ref_weight = torch.cat([s.routing.weight for s in stats]).detach()
        # the same assignments in any order (the single-process top-k layer lists them rank-major)
        g_order, r_order = _canonical(glob.token, glob.expert), _canonical(ref_token, ref_expert)
        errs["global_routing"] = int(not (torch.equal(glob.token[g_order], ref_token[r_order])
                                          and torch.equal(glob.expert[g_order], ref_expert[r_order])))
        errs["global_routing.weight"] = _max_err(glob.weight[g_order], ref_weight[r_order])
        errs["local_counts"] = int((st.local_counts - stats[rank].counts).abs().max())
        lo, hi = ep.expert_range
        out[name] = {"errors": errs, "dropped_fraction": float(st.dropped_fraction),
                     "backend": ep.backend_for(xs[rank]), "stats_type": type(st).__name__,
                     "bytes_sent": traffic.bytes_sent, "kept": int(st.counts.sum()),
                     "remote": int(((st.routing.expert < lo) | (st.routing.expert >= hi)).sum())}
    return out


def _canonical(token, expert):
    """An order of the assignments by (token, expert): one order for the same set, however listed."""
    return torch.argsort(token * (int(expert.max()) + 1 if expert.numel() else 1) + expert)


def bad_config(rank: int, world: int, cases: list[str]) -> dict:
    """Per case: what this rank raised when building a layer that is wrong on some rank, and
    whether the group was still in step afterwards (an all-reduce of ones gives the world size)."""
    out = {}
    for case in cases:
        kw, e = dict(capacity_factor=1.0), 4
        if case == "indivisible":
            e = 3
        elif case == "mismatch" and rank == world - 1:
            kw["capacity_factor"] = 2.0
        elif case == "bad_arg" and rank == 1:
            kw["drop_policy"] = "random"
        elif case == "experts_differ" and rank == 0:
            e = 8
        try:
            ExpertParallelMoE(D, H, e, make_router("topk", top_k=2), **kw)
            raised = None
        except ValueError as exc:
            raised = str(exc)
        probe = torch.ones(1)
        dist.all_reduce(probe)
        out[case] = (raised, float(probe))
    return out


def stall(rank: int, world: int):
    """Rank 1 fails before a collective that rank 0 enters: the launcher must not hang."""
    if rank == 1:
        raise RuntimeError("rank 1 fails on purpose")
    dist.all_reduce(torch.ones(1))


def die(rank: int, world: int):
    """Rank 1's process exits with code 7 without a word (as a crash would)."""
    import os
    if rank == 1:
        os._exit(7)
    return rank


def train_curve(rank: int, world: int, config: dict, task_names: list[str], steps: int) -> dict:
    """A distributed training run: the history of every step on this rank, and the full experts."""
    from pwlab import tasks
    from pwlab.config import Config
    from pwlab.distributed.parallel import expert_parameters
    from pwlab.distributed.trainer import DistributedTrainer

    trainer = DistributedTrainer(tasks.load(task_names), Config.from_dict(config))
    trainer.step(steps)
    experts = {}
    for i, layer in trainer.model.moe_blocks().items():
        experts[i] = [w.clone() for w in layer.gather_experts()]
    return {"history": trainer.history, "experts": experts, "num_expert_params": len(expert_parameters(trainer.model))}


def suite(rank: int, world: int, scenarios: list[dict], config: dict, task_names: list[str], steps: int) -> dict:
    """The layer scenarios, then a training run, in one set of processes (start-up is the slow part)."""
    return {"equivalence": equivalence(rank, world, scenarios),
            "training": train_curve(rank, world, config, task_names, steps)}


def nonfinite_gradient(rank: int, world: int, config: dict, task_names: list[str], skip: bool) -> dict:
    """Three steps; rank 1 alone poisons one expert's gradient with Inf at the second step."""
    import warnings

    from pwlab import tasks
    from pwlab.config import Config
    from pwlab.distributed.parallel import expert_parameters
    from pwlab.distributed.trainer import DistributedTrainer
    from pwlab.train import NonFiniteGradientError

    cfg = Config.from_dict(config)
    cfg = cfg.with_train(skip_nonfinite=skip)
    trainer = DistributedTrainer(tasks.load(task_names), cfg)
    target = expert_parameters(trainer.model)[0]
    backwards = [0]

    def poison(g):            # the second backward pass only, on rank 1 only
        backwards[0] += 1
        return g + float("inf") if rank == 1 and backwards[0] == 2 else g
    target.register_hook(poison)
    before = [p.detach().clone() for p in trainer.model.parameters()]
    buffers_before = [b.clone() for b in trainer.model.buffers()]
    buffers_moved = False
    error = None
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            for _ in range(3):
                trainer.step(1)
                if trainer.step_count == 1 and not trainer.history[-1].get("skipped"):
                    # an applied step moves the balancing bias, so the check below can fail
                    buffers_moved = any(not torch.equal(a, b) for a, b in zip(buffers_before, trainer.model.buffers()))
                    before = [p.detach().clone() for p in trainer.model.parameters()]
                    buffers_before = [b.clone() for b in trainer.model.buffers()]
                if trainer.history[-1].get("skipped"):
                    after_skip = [p.detach().clone() for p in trainer.model.parameters()]
                    buffers_after = [b.clone() for b in trainer.model.buffers()]
        except NonFiniteGradientError as e:
            error = str(e)
            after_skip = [p.detach().clone() for p in trainer.model.parameters()]
            buffers_after = [b.clone() for b in trainer.model.buffers()]
    unchanged = all(torch.equal(a, b) for a, b in zip(before, after_skip))
    return {"error": error, "history": trainer.history, "unchanged_by_bad_step": unchanged,
            "buffers_moved_by_a_step": buffers_moved,
            "buffers_put_back": all(torch.equal(a, b) for a, b in zip(buffers_before, buffers_after)),
            "finite": all(bool(torch.isfinite(p).all()) for p in trainer.model.parameters()),
            "warnings": [str(w.message) for w in caught if issubclass(w.category, RuntimeWarning)]}


def swat_to_expert_parallel(rank: int, world: int, kind: str) -> dict:
    """A swatified single-process MoE moved to expert parallelism: what each rank computes with."""
    from pwlab.routing import TopK
    from pwlab.swat import swatify
    from pwlab.swat.experts import is_swat_bank, swat_settings

    torch.manual_seed(0)
    moe = MoE(16, 24, 4, TopK(top_k=2), expert=kind)
    swatify(moe, 0.75, 0.5, variant="uniform", topk_period=3)
    layer = ExpertParallelMoE.from_moe(moe)
    x = torch.randn(20, 16, generator=torch.Generator().manual_seed(1), requires_grad=True)
    layer.train()
    y, _ = layer(x)
    local = layer.experts.effective_weights()
    matrices = [w for w, name in zip(local, layer.experts.WEIGHT_NAMES) if name.startswith("w")]
    full = layer.gather_effective_weights()
    # the oracle: a plain layer of the same kind computing with the gathered masked weights
    ref = MoE(16, 24, 4, copy.deepcopy(moe.router), expert=kind)
    with torch.no_grad():
        for p, w in zip(ref.experts.weight_parameters(), full):
            p.copy_(w)
    y_ref, _ = ref(x.detach())
    y.sum().backward()
    return {"swat": is_swat_bank(layer.experts), "settings": swat_settings(layer.experts),
            "kept": [float((w != 0).float().mean()) for w in matrices],
            "err": float((y.detach() - y_ref.detach()).abs().max()),
            "masked_get_gradient": all(bool((p.grad[w == 0] != 0).any()) for p, w, n in zip(
                layer.experts.weight_parameters(), local, layer.experts.WEIGHT_NAMES) if n.startswith("w"))}


def _fixed_batches(tasks_):
    """One fixed multi-task batch, the same on every rank and in the test process."""
    from pwlab.tasks import MultiTaskSampler
    return MultiTaskSampler(tasks_, batch_size=12, seed=123).sample()


def _outputs(trainer) -> dict:
    """Eval-mode predictions on the fixed batch: each rank's expert-parallel model on the whole batch."""
    trainer.model.eval()
    try:
        with torch.no_grad():
            out = trainer.model(_fixed_batches(trainer.tasks))
    finally:
        trainer.model.train()
    return {t: p.detach().clone() for t, p in out.predictions.items()}


def _trainer_state(trainer) -> dict:
    """What must continue exactly: this rank's parameters and buffers (its expert shard), its
    optimizer state, the history, the sampler and both random streams."""
    opt = trainer.optimizer.state_dict()
    return {"model": {k: v.detach().clone() for k, v in trainer.model.state_dict().items()},
            "optimizer": {i: {k: (v.clone() if isinstance(v, torch.Tensor) else v) for k, v in s.items()}
                          for i, s in opt["state"].items()},
            "history": [{k: v for k, v in r.as_dict().items() if k != "time_s"} for r in trainer.history],
            "step": trainer.step_count, "sampler": trainer.sampler.state_dict(),
            "generator": trainer.generator.get_state(), "torch_rng": trainer.torch_rng.clone()}


def checkpoint_save(rank: int, world: int, config: dict, task_names: list[str], k: int, m: int, path: str) -> dict:
    """Train k steps, save, train m more: the state at k + m."""
    from pwlab import tasks
    from pwlab.config import Config
    from pwlab.distributed.trainer import DistributedTrainer

    trainer = DistributedTrainer(tasks.load(task_names), Config.from_dict(config))
    initial = {k_: v.clone() for k_, v in trainer.model.state_dict().items()}
    trainer.step(k)
    trainer.save(path)
    trainer.step(m)
    return {"initial": initial, "final": _trainer_state(trainer)}


def checkpoint_restore(rank: int, world: int, config: dict, task_names: list[str], m: int, path: str) -> dict:
    """A fresh group: restore the checkpoint into a new trainer (and load one from it), train m steps."""
    from pwlab import tasks
    from pwlab.config import Config
    from pwlab.distributed.trainer import DistributedTrainer

    restored = DistributedTrainer(tasks.load(task_names), Config.from_dict(config))
    restored.restore(path)
    at_restore = {"step": restored.step_count, "outputs": _outputs(restored),
                  "model": {k: v.detach().clone() for k, v in restored.model.state_dict().items()}}
    restored.step(m)
    loaded = DistributedTrainer.load(path)
    loaded.step(m)
    return {"at_restore": at_restore, "restored": _trainer_state(restored), "loaded": _trainer_state(loaded),
            "expert_range": [layer.expert_range for layer in restored.model.moe_blocks().values()]}


def interrupted_update(rank: int, world: int, config: dict, task_names: list[str]) -> dict:
    """Ctrl-C on rank 1 alone, in the middle of the second update (inside optimizer.step): the
    update must land whole on that rank (KeyboardInterrupt raised after it), so the group
    stays in step and ends where an uninterrupted group ends."""
    import os
    import signal

    from pwlab import tasks
    from pwlab.config import Config
    from pwlab.distributed.trainer import DistributedTrainer

    def run(interrupt: bool):
        trainer = DistributedTrainer(tasks.load(task_names), Config.from_dict(config))
        updates = [0]

        def pre_hook(opt, args, kwargs):
            updates[0] += 1
            if interrupt and rank == 1 and updates[0] == 2:
                os.kill(os.getpid(), signal.SIGINT)
        trainer.optimizer.register_step_pre_hook(pre_hook)
        caught = None
        for _ in range(3):
            try:
                trainer.step(1)
            except KeyboardInterrupt:
                caught = trainer.step_count
        return trainer, caught

    plain, _ = run(False)
    interrupted, caught_at = run(True)
    same = all(torch.equal(a, b) for a, b in zip(plain.model.state_dict().values(),
                                                 interrupted.model.state_dict().values()))
    return {"caught_at_step": caught_at, "same_as_uninterrupted": same, "steps": interrupted.step_count,
            "history_steps": [r["step"] for r in interrupted.history]}


def load_single_process_checkpoint(rank: int, world: int, path: str, m: int) -> dict:
    """A single-process checkpoint loaded into a group (DistributedTrainer.load), m more steps."""
    import warnings

    from pwlab.distributed.trainer import DistributedTrainer

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        trainer = DistributedTrainer.load(path)
    start = trainer.step_count
    trainer.step(m)
    return {"start": start, "history": [r.as_dict() for r in trainer.history],
            "experts": {i: [w.clone() for w in layer.gather_experts()] for i, layer in trainer.model.moe_blocks().items()},
            "warnings": [str(w.message) for w in caught if issubclass(w.category, UserWarning)]}


def restore_fails_on_one_rank(rank: int, world: int, config: dict, task_names: list[str], path: str) -> dict:
    """A checkpoint that rank 1 cannot read: every rank raises, nothing changes, the group stays in step."""
    from pwlab import tasks
    from pwlab.config import Config
    from pwlab.distributed.trainer import DistributedTrainer

    trained = DistributedTrainer(tasks.load(task_names), Config.from_dict(config))
    trained.step(2)
    trained.save(path)
    fresh = DistributedTrainer(tasks.load(task_names), Config.from_dict(config))
    before = {k: v.clone() for k, v in fresh.model.state_dict().items()}
    try:
        fresh.restore(path if rank == 0 else path + ".missing")
        error = None
    except ValueError as e:
        error = str(e)
    unchanged = fresh.step_count == 0 and all(torch.equal(v, fresh.model.state_dict()[k]) for k, v in before.items())
    probe = torch.ones(1)
    dist.all_reduce(probe)
    return {"error": error, "unchanged": unchanged, "probe": float(probe)}


def nonfinite_input(rank: int, world: int, config: dict, task_names: list[str], skip: bool) -> dict:
    """Three steps; at the second, the step's last example (so rank 1's piece alone) holds a NaN."""
    import dataclasses
    import warnings

    from pwlab import tasks
    from pwlab.config import Config
    from pwlab.distributed.trainer import DistributedTrainer
    from pwlab.train import NonFiniteLossError

    trainer = DistributedTrainer(tasks.load(task_names), Config.from_dict(config).with_train(skip_nonfinite=skip))
    sample, calls = trainer.sampler.sample, [0]

    def poisoned():
        batches = sample()
        calls[0] += 1
        if calls[0] == 2:
            x = batches[-1].x.clone()
            x[-1] = float("nan")
            batches[-1] = dataclasses.replace(batches[-1], x=x)
        return batches
    trainer.sampler.sample = poisoned
    error = None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            trainer.step(3)
        except NonFiniteLossError as e:
            error = (e.what, e.where, e.tasks, str(e))
    return {"error": error, "history": [r.as_dict() for r in trainer.history],
            "finite": all(bool(torch.isfinite(p).all()) for p in trainer.model.parameters())}


def balancing_bias_sync(rank: int, world: int, sizes: list[int], steps: int) -> dict:
    """An expert-parallel layer with auxiliary-loss-free balancing trains ``steps`` forwards,
    each rank on its own tokens (``sizes[rank]`` of them): the bias after each forward."""
    torch.manual_seed(0)
    ref = MoE(D, H, 4, make_router("topk", top_k=1, bias_update_rate=0.1))
    ep = ExpertParallelMoE.from_moe(ref)
    ep.train()
    biases = []
    for step in range(steps):
        xs, _ = _tokens(10 + step, sizes)
        ep(xs[rank] + 2.0)                  # shifted inputs: a router far from balanced
        biases.append(ep.router.expert_bias.clone())
    return {"biases": biases}
