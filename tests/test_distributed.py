"""Expert parallelism: P gloo processes on this CPU against the single-process MoE (the oracle)."""
from __future__ import annotations

import json

import pytest
import torch

from pwlab.distributed import DistributedRunError, a2a_bytes, a2a_volume, run_local
import _dist_worker as worker

TOL = 1e-5
E = 8
# tokens per rank (cycled): uneven, and one rank may hold none
SCENARIOS = [
    dict(name="topk2_position", router=("topk", {"top_k": 2}), num_experts=E, tokens=[24, 13, 30, 17],
         capacity_factor=1.0, drops=True),
    dict(name="topk2_probability_tokens", router=("topk", {"top_k": 2}), num_experts=E, tokens=[20, 31, 9, 26],
         capacity_factor=1.5, capacity_convention="tokens", drop_policy="probability", drops=True),
    dict(name="switch", router=("switch", {}), num_experts=E, tokens=[29, 16], capacity_factor=1.0, drops=True),
    dict(name="noisy_topk_train", router=("noisy_topk", {"top_k": 2}), num_experts=E, tokens=[18, 25, 12],
         capacity_factor=0.8, noisy=True, drops=True),
    dict(name="gshard_train", router=("gshard", {}), num_experts=E, tokens=[22, 15], capacity_factor=1.0,
         noisy=True, drops=True),
    dict(name="expert_choice", router=("expert_choice", {"capacity_factor": 1.0}), num_experts=E,
         tokens=[16, 11, 20]),
    dict(name="masked", router=("topk", {"top_k": 2}), num_experts=E, tokens=[21, 14], capacity_factor=1.0,
         mask=True, drops=True),
    dict(name="disabled_experts", router=("topk", {"top_k": 2}), num_experts=E, tokens=[19, 23],
         capacity_factor=1.25, disabled=[1, 6], drops=True),
    dict(name="idle_rank", router=("topk", {"top_k": 2}), num_experts=E, tokens=[14, 9, 11], idle_rank=1, drops=True),
    dict(name="nothing_kept", router=("topk", {"top_k": 2}), num_experts=E, tokens=[6, 5], disable_all=True, drops=True),
    dict(name="dropless_empty_rank", router=("topk", {"top_k": 2}), num_experts=E, tokens=[0, 17, 9]),
    dict(name="one_expert_per_rank", router=("topk", {"top_k": 2}), num_experts=4, tokens=[15, 8, 27, 12],
         capacity_factor=1.0, drops=True),
]


TRAIN_TASKS = ["mmoe_a", "mmoe_b"]     # synthetic: no data set to load in every process
TRAIN_STEPS = 20


@pytest.fixture(scope="module")
def single_process_curve():
    from pwlab import config, tasks
    from pwlab.train import Trainer

    # no auxiliary losses: they are per rank (one GShard group each) by design; dropless as tiny is
    cfg = config.tiny().with_model(aux_weights={"load_balancing": 0.0, "z_loss": 0.0, "importance_load": 0.0})
    cfg = cfg.with_train(batch_size=16)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)          # as each rank runs; tiny ops on a busy machine crawl with more
    try:
        trainer = Trainer(tasks.load(TRAIN_TASKS), cfg)
        trainer.step(TRAIN_STEPS)
    finally:
        torch.set_num_threads(threads)
    return cfg, trainer


def _check_equivalence(results: list[dict], world: int) -> None:
    for sc in SCENARIOS:
        if sc["num_experts"] % world:
            continue
        per_rank = [r[sc["name"]] for r in results]
        for rank, r in enumerate(per_rank):
            for what, err in r["errors"].items():
                assert err <= TOL, f"{sc['name']} rank {rank}/{world}: {what} differs by {err}"
        # the single-process forward with the expert-parallel backend (no fused node, no override)
        assert {(r["backend"], r["stats_type"]) for r in per_rank} == {("expert_parallel", "ExpertParallelStats")}
        # global statistics: the same on every rank
        assert len({r["dropped_fraction"] for r in per_rank}) == 1
        assert len({r["kept"] for r in per_rank}) == 1
        if sc.get("drops"):
            assert per_rank[0]["dropped_fraction"] > 0, f"{sc['name']}: capacity dropped nothing"
        elif sc.get("capacity_factor") is None and sc["router"][0] != "expert_choice":
            assert per_rank[0]["dropped_fraction"] == 0
        # the exchange's measured bytes equal the cost model given the remote assignments
        measured = sum(r["bytes_sent"] for r in per_rank)
        remote = sum(r["remote"] for r in per_rank)
        model = a2a_volume(1, worker.D, 1, sc["num_experts"], world, remote_assignments=remote)["total"]
        assert measured == model, f"{sc['name']}: measured {measured} B, model {model} B"


def _scenarios_for(world):
    return [sc for sc in SCENARIOS if sc["num_experts"] % world == 0]


@pytest.fixture(scope="module")
def suite_run(single_process_curve):
    """world -> per-rank results of tests/_dist_worker.suite (layer scenarios + training), run once."""
    cfg, _ = single_process_curve
    cache = {}

    def get(world):
        if world not in cache:
            cache[world] = run_local(worker.suite, world, _scenarios_for(world), cfg.to_dict(), TRAIN_TASKS,
                                     TRAIN_STEPS, timeout=110)
        return cache[world]
    return get


@pytest.mark.slow
@pytest.mark.parametrize("world", [2, 4])
def test_expert_parallel_equals_single_process(world, suite_run):
    _check_equivalence([r["equivalence"] for r in suite_run(world)], world)


@pytest.mark.slow
def test_bad_configuration_raises_on_every_rank_without_hanging():
    cases = ["indivisible", "mismatch", "bad_arg", "experts_differ"]
    results = run_local(worker.bad_config, 2, cases, timeout=60)
    for rank, res in enumerate(results):
        for case in cases:
            raised, probe = res[case]
            assert raised is not None, f"{case}: rank {rank} did not raise"
            assert probe == 2.0, f"{case}: the group fell out of step"
        assert "num_experts must be divisible by the world size 2" in res["indivisible"][0]
        assert "capacity_factor=2.0 (rank 0: 1.0)" in res["mismatch"][0]
        assert "rank 1" in res["bad_arg"][0] and "drop_policy" in res["bad_arg"][0]
        assert "num_experts=4 (rank 0: 8)" in res["experts_differ"][0]


@pytest.mark.slow
def test_a_failing_rank_does_not_hang_the_launcher():
    with pytest.raises(DistributedRunError, match="rank 1 fails on purpose"):
        run_local(worker.stall, 2, timeout=12)


def test_a_rank_whose_process_dies_is_reported_with_its_exit_code():
    with pytest.raises(DistributedRunError, match="ProcessDied: exit code 7"):
        run_local(worker.die, 2, timeout=30)


def test_run_local_leaves_no_rendezvous_files(tmp_path, monkeypatch):
    import tempfile

    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    assert run_local(worker.die, 1, timeout=30) == [0]
    assert list(tmp_path.iterdir()) == []


def test_layer_needs_a_process_group():
    from pwlab.distributed import ExpertParallelMoE

    with pytest.raises(ValueError, match="process group"):
        ExpertParallelMoE(8, 16, 4)


# -- the cost model, against hand counts ---------------------------------------------------------
def test_cost_model_hand_count():
    # N=8 tokens, D=4, k=2, E=4, P=2, float32: A = 16 assignments, half remote -> R = 8.
    # counts: each rank sends E/P = 2 int64 to the other: 2 ranks · 2 · 8 B = 32 B.
    # dispatch: 8 rows · 4 · 4 B = 128 B forward + 128 B backward; combine the same.
    v = a2a_volume(8, 4, 2, 4, 2)
    assert v == {"counts": 32.0, "dispatch": 256.0, "combine": 256.0, "total": 544.0, "remote_assignments": 8.0}
    assert a2a_bytes(8, 4, 2, 4, 2, backward=False) == 32 + 128 + 128


def test_cost_model_scaling():
    assert a2a_bytes(1000, 64, 2, 8, 1) == 0                             # one device: nothing moves
    # P = 4: 3/4 of 2048 assignments remote = 1536 rows; 4 passes · 1536 · 16 · 2 B; counts 8 · 8 · 3
    assert a2a_bytes(1024, 16, 2, 8, 4, bytes_per_element=2) == 4 * 1536 * 16 * 2 + 8 * 8 * 3
    base = a2a_volume(512, 32, 2, 8, 4)
    for kw, factor in ((dict(num_tokens=1024), 2), (dict(d_model=64), 2), (dict(top_k=4), 2)):
        args = dict(num_tokens=512, d_model=32, top_k=2, num_experts=8, world_size=4) | kw
        assert a2a_volume(**args)["dispatch"] == factor * base["dispatch"]
    assert a2a_volume(512, 32, 2, 8, 8)["dispatch"] == base["dispatch"] * (7 / 8) / (3 / 4)
    assert a2a_volume(512, 32, 2, 8, 4, kept_fraction=0.5)["dispatch"] == base["dispatch"] / 2


@pytest.mark.parametrize("bad, match", [(dict(num_experts=6), "divisible"), (dict(world_size=0), "world_size"),
                                        (dict(kept_fraction=1.5), "kept_fraction"), (dict(d_model=0), "d_model")])
def test_cost_model_rejects_bad_input(bad, match):
    args = dict(num_tokens=8, d_model=4, top_k=2, num_experts=4, world_size=4) | bad
    with pytest.raises(ValueError, match=match):
        a2a_volume(**args)


@pytest.mark.slow
def test_bench_ep_prints_one_line_per_world_size(capsys):
    from pwlab.bench import ep

    assert ep.main(["--quick", "--world-sizes", "1,2", "--tokens", "128", "--d-model", "16", "--d-hidden", "16"]) == 0
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [r["world_size"] for r in lines] == [1, 2]
    assert lines[0]["a2a_bytes"] == 0
    assert lines[1]["a2a_bytes"] == lines[1]["model_exact_bytes"] > 0
    assert 0.8 < lines[1]["bytes_over_model"] < 1.2


# -- distributed training -------------------------------------------------------------------------
def _batches(sizes):
    from pwlab.tasks.base import TaskBatch

    return [TaskBatch(task=f"t{i}", task_index=i, sense="tabular", x=torch.arange(n, dtype=torch.float32)[:, None] + 100 * i,
                      y=torch.arange(n)) for i, n in enumerate(sizes)]


@pytest.mark.parametrize("world", [1, 2, 3, 4])
def test_shard_batches_partitions_the_step(world):
    from pwlab.distributed.parallel import shard_batches

    batches = _batches([5, 1, 8])
    pieces = [shard_batches(batches, r, world) for r in range(world)]
    sizes = [sum(len(b.y) for b in mine) for mine, _ in pieces]
    assert sum(sizes) == 14 and max(sizes) - min(sizes) <= 1
    for i, b in enumerate(batches):   # every example once, in order; the shares of a task sum to one
        got = torch.cat([m.x for mine, _ in pieces for m in mine if m.task == b.task])
        assert torch.equal(got, b.x)
        assert sum(share.get(b.task, 0.0) for _, share in pieces) == pytest.approx(1.0)
    # the decomposition of a mean per task: Σ_ranks share · mean_on_rank = mean over the task
    for b in batches:
        whole = b.x.mean()
        parts = sum(share[b.task] * m.x.mean() for mine, share in pieces for m in mine if m.task == b.task)
        assert float(parts) == pytest.approx(float(whole))


def test_shard_batches_needs_an_example_per_rank():
    from pwlab.distributed.parallel import shard_batches

    with pytest.raises(ValueError, match="batch_size must be >= the world size 4"):
        shard_batches(_batches([2, 1]), 0, 4)


@pytest.mark.slow
@pytest.mark.parametrize("world", [2, 4])
def test_distributed_training_matches_single_process_loss_curve(world, single_process_curve, suite_run):
    _, ref = single_process_curve
    runs = [r["training"] for r in suite_run(world)]
    ref_loss = [r["loss"] for r in ref.history]
    assert len(ref_loss) == TRAIN_STEPS and max(ref_loss) - min(ref_loss) > 1e-2     # the loss does move
    for rank, run in enumerate(runs):
        loss = [r["loss"] for r in run["history"]]
        assert len(loss) == TRAIN_STEPS
        assert max(abs(a - b) for a, b in zip(loss, ref_loss)) < 1e-4, f"rank {rank}: {loss} vs {ref_loss}"
        for a, b in zip(run["history"], ref.history):
            for t in TRAIN_TASKS:
                assert a[f"n/{t}"] == b[f"n/{t}"]
                assert a[f"loss/{t}"] == pytest.approx(b[f"loss/{t}"], abs=1e-4)
            assert a["load/1"] == pytest.approx(b["load/1"], abs=1e-6)
            assert a["grad_norm"] == pytest.approx(b["grad_norm"], rel=1e-4)
        assert run["num_expert_params"] == 4
        # after 20 steps the experts, put together, are the single-process experts
        ref_experts = ref.model.moe_blocks()[1].experts.weights()
        for got, want in zip(run["experts"][1], ref_experts):
            assert torch.allclose(got, want.detach(), atol=1e-4)


def test_train_entry_point_exits_with_main_s_code_and_its_output_complete():
    # the module leaves through os._exit (see its __main__ block): the summary line must still
    # reach the pipe whole, and an argument error must still exit with 2
    import subprocess
    import sys

    base = [sys.executable, "-m", "pwlab.distributed.train", "--preset", "tiny", "--tasks", "wine",
            "--eval-examples", "16", "--no-progress"]
    ok = subprocess.run(base + ["--steps", "2", "--history"], capture_output=True, text=True, timeout=120)
    assert ok.returncode == 0, ok.stderr[-2000:]
    lines = [json.loads(line) for line in ok.stdout.splitlines()]
    assert [r["step"] for r in lines[:-1]] == [1, 2]
    assert lines[-1]["world_size"] == 1 and lines[-1]["steps"] == 2 and set(lines[-1]["eval"]) == {"wine"}
    bad = subprocess.run(base + ["--steps", "-1"], capture_output=True, text=True, timeout=120)
    assert bad.returncode == 2 and "--steps must be >= 0, got -1" in bad.stderr


def test_train_entry_point_saves_and_resumes(tmp_path):
    """--save writes a checkpoint that --resume continues (steps 3, 4 follow 1, 2 as in one run of 4)."""
    import subprocess
    import sys

    base = [sys.executable, "-m", "pwlab.distributed.train", "--preset", "tiny", "--tasks", "wine",
            "--eval-examples", "16", "--no-progress", "--history"]
    ckpt = str(tmp_path / "run.pt")

    def run(*extra):
        done = subprocess.run(base + list(extra), capture_output=True, text=True, timeout=120)
        assert done.returncode == 0, done.stderr[-2000:]
        return [json.loads(line) for line in done.stdout.splitlines()][:-1]

    whole = run("--steps", "4")
    first = run("--steps", "2", "--save", ckpt)
    rest = run("--steps", "2", "--resume", ckpt)
    assert [r["step"] for r in rest] == [3, 4]
    drop = lambda r: {k: v for k, v in r.items() if k != "time_s"}      # noqa: E731
    assert [drop(r) for r in first + rest] == [drop(r) for r in whole]
    missing = subprocess.run(base + ["--steps", "1", "--resume", ckpt + ".missing"], capture_output=True, text=True,
                             timeout=120)
    assert missing.returncode == 2 and "is not a file" in missing.stderr


@pytest.mark.slow
@pytest.mark.parametrize("skip", [False, True])
def test_distributed_trainer_never_applies_a_nonfinite_gradient(skip):
    """Rank 1 alone gets an Inf gradient at step 2: the global norm is Inf on every rank, so
    every rank refuses the step (NonFiniteGradientError) or, with skip_nonfinite, skips it with a
    warning, the parameters untouched and the buffers put back (the router's balancing bias,
    which its forward moved), and goes on."""
    from pwlab import config

    cfg = config.tiny().with_model(router_kwargs={"bias_update_rate": 0.01}).with_train(batch_size=16)
    results = run_local(worker.nonfinite_gradient, 2, cfg.to_dict(), TRAIN_TASKS, skip, timeout=240)
    for rank, res in enumerate(results):
        assert res["unchanged_by_bad_step"], f"rank {rank}: the non-finite step changed the parameters"
        assert res["buffers_moved_by_a_step"], f"rank {rank}: an applied step left the balancing bias where it was"
        assert res["buffers_put_back"], f"rank {rank}: the non-finite step's bias update stayed"
        assert res["finite"], f"rank {rank}: non-finite parameters"
        if not skip:
            assert res["error"] is not None and "step 2" in res["error"], (rank, res["error"])
            assert len(res["history"]) == 1
        else:
            assert res["error"] is None
            assert [bool(r.get("skipped")) for r in res["history"]] == [False, True, False]
            assert res["history"][1]["nonfinite"] == "gradient"
            assert any("skipped step 2" in w for w in res["warnings"]), res["warnings"]


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["ffn", "swiglu"])
def test_a_swatified_moe_keeps_its_sparsity_under_expert_parallelism(kind):
    """ExpertParallelMoE.from_moe of a SWAT layer shards the parameters and keeps SWAT: each rank's
    bank is a SWAT bank with the same settings, keeps a quarter of each weight matrix (top-K over
    its shard), computes exactly what a plain layer with the gathered masked weights computes,
    and, as SWAT wants, the masked weights still get a gradient (so the top-K set can change)."""
    results = run_local(worker.swat_to_expert_parallel, 2, kind, timeout=180)
    for rank, res in enumerate(results):
        assert res["swat"], f"rank {rank}: the expert-parallel layer dropped SWAT"
        assert res["settings"] == {"weight_sparsity": 0.75, "act_sparsity": 0.5, "topk_period": 3,
                                   "structured": False, "fixed_mask": True}
        assert all(abs(k - 0.25) < 0.01 for k in res["kept"]), res["kept"]
        assert res["err"] < 1e-5, f"rank {rank}: {res['err']}"
        assert res["masked_get_gradient"]


@pytest.mark.slow
def test_balancing_bias_is_one_update_from_the_ranks_summed_loads():
    """Auxiliary-loss-free balancing under expert parallelism: each rank routes its own tokens
    (5 and 11 of them), yet after every forward both ranks hold the bias a single process
    computes on all 16 tokens (oracle: the single-process layer on the ranks' tokens in order)."""
    from pwlab.moe import MoE
    from pwlab.routing import make_router

    sizes, steps = [5, 11], 4
    results = run_local(worker.balancing_bias_sync, 2, sizes, steps, timeout=120)
    torch.manual_seed(0)
    ref = MoE(worker.D, worker.H, 4, make_router("topk", top_k=1, bias_update_rate=0.1))
    ref.train()
    for step in range(steps):
        xs, _ = worker._tokens(10 + step, sizes)
        ref(torch.cat(xs) + 2.0)
        want = ref.router.expert_bias
        for rank, res in enumerate(results):
            assert torch.equal(res["biases"][step], want), (rank, step, res["biases"][step], want)
    assert bool(want.abs().sum() > 0) and len(set(want.tolist())) > 1     # it did move, expert by expert


# -- checkpoints and interrupts of the distributed trainer ---------------------------------------
def _same(a, b) -> bool:
    """Exact equality of nested containers of tensors and plain values."""
    if isinstance(a, torch.Tensor) or isinstance(b, torch.Tensor):
        return isinstance(a, torch.Tensor) and isinstance(b, torch.Tensor) and a.dtype == b.dtype and torch.equal(a, b)
    if isinstance(a, dict):
        return isinstance(b, dict) and set(a) == set(b) and all(_same(a[k], b[k]) for k in a)
    if isinstance(a, (list, tuple)):
        return isinstance(b, (list, tuple)) and len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b))
    return a == b


def _checkpoint_config(name):
    from pwlab import config

    cfg = config.tiny().with_train(batch_size=16)
    if name == "noise_dropout_capacity":      # per-rank routing noise and dropout streams, tokens dropped
        return cfg.with_model(router="noisy_topk", capacity_factor=1.0, dropout=0.1)
    return cfg.with_model(router_kwargs={"bias_update_rate": 0.01})   # a replicated buffer that moves


@pytest.mark.slow
@pytest.mark.parametrize("name", ["noise_dropout_capacity", "balancing_bias"])
def test_distributed_checkpoint_loads_back_exactly(name, tmp_path):
    """2 ranks train k steps, save, train m more; a fresh 2-rank group restores the checkpoint
    (DistributedTrainer.restore, and DistributedTrainer.load) and trains m steps: every rank's
    parameters, optimizer state, sampler, random streams and history equal the uninterrupted
    run's bit for bit. The file is a single-process checkpoint: Trainer.load reads it, and its
    model computes what the 2-rank model computes."""
    from pwlab.train import Trainer

    cfg, path, k, m = _checkpoint_config(name), str(tmp_path / "run.pt"), 3, 3
    saved = run_local(worker.checkpoint_save, 2, cfg.to_dict(), TRAIN_TASKS, k, m, path, timeout=240)
    resumed = run_local(worker.checkpoint_restore, 2, cfg.to_dict(), TRAIN_TASKS, m, path, timeout=240)
    for rank in range(2):
        want = saved[rank]["final"]
        assert want["step"] == k + m and len(want["history"]) == k + m
        for which in ("restored", "loaded"):
            got = resumed[rank][which]
            for part in ("step", "history", "model", "optimizer", "sampler", "generator", "torch_rng"):
                assert _same(got[part], want[part]), f"rank {rank}, {which}: {part} differs from the uninterrupted run"
        # the fresh trainer started from the initial weights, which the k steps moved: restoring did load
        assert resumed[rank]["at_restore"]["step"] == k
        assert not _same(resumed[rank]["at_restore"]["model"], saved[rank]["initial"])
    # the ranks' states differ (their own experts, routing-noise generators, buffers), so each kept its own
    assert not _same(saved[0]["final"]["model"], saved[1]["final"]["model"])
    assert not _same(saved[0]["final"]["generator"], saved[1]["final"]["generator"])

    single = Trainer.load(path)
    assert single.step_count == k and [r["step"] for r in single.history] == list(range(1, k + 1))
    assert [r["loss"] for r in single.history] == [r["loss"] for r in saved[0]["final"]["history"][:k]]
    single.model.eval()
    with torch.no_grad():
        out = single.model(worker._fixed_batches(single.tasks))
    whole = single.model.state_dict()
    if name == "balancing_bias":
        # the bias is updated from the loads summed over the ranks: the replicas stay equal (and moved)
        b0, b1 = (saved[r]["final"]["model"]["blocks.1.ffn.router.expert_bias"] for r in range(2))
        assert torch.equal(b0, b1) and bool(b0.abs().sum() > 0)
    for rank in range(2):
        got = resumed[rank]["at_restore"]
        for t in TRAIN_TASKS:
            assert torch.allclose(got["outputs"][t], out.predictions[t], atol=1e-5), (rank, t)
        # each rank holds its slice of the single-process expert bank, exactly
        (lo, hi), = resumed[rank]["expert_range"]
        for key in ("blocks.1.ffn.experts.w1", "blocks.1.ffn.experts.b2"):
            assert key in whole, sorted(whole)[:20]
            assert torch.equal(got["model"][key], whole[key][lo:hi])


@pytest.mark.slow
def test_ctrl_c_on_one_rank_is_held_until_the_update_has_landed():
    """Ctrl-C reaches rank 1 alone inside the optimizer's update of step 2: the distributed step
    holds it, as the single-process one does, until the update and its record are in, then
    raises KeyboardInterrupt; the group stays in step and ends where an uninterrupted one does."""
    from pwlab import config

    cfg = config.tiny().with_train(batch_size=16)
    results = run_local(worker.interrupted_update, 2, cfg.to_dict(), TRAIN_TASKS, timeout=240)
    assert results[0]["caught_at_step"] is None
    assert results[1]["caught_at_step"] == 2, "the interrupt did not wait for the update of step 2"
    for rank, res in enumerate(results):
        assert res["steps"] == 3 and res["history_steps"] == [1, 2, 3], (rank, res)
        assert res["same_as_uninterrupted"], f"rank {rank}"


def test_distributed_trainer_runs_the_trainer_s_own_step():
    """One step, written once: the distributed trainer overrides none of it (only the strategy)."""
    from pwlab.distributed.trainer import DistributedTrainer, ExpertParallelStrategy
    from pwlab.train import StepStrategy, Trainer

    for name in ("_one_step", "_one_step_inner", "_skip_or_raise", "_snapshot", "_restore", "_commit", "save",
                 "restore", "step", "fit"):
        assert getattr(DistributedTrainer, name) is getattr(Trainer, name), name
    assert issubclass(ExpertParallelStrategy, StepStrategy)


@pytest.mark.slow
def test_a_single_process_checkpoint_continues_on_two_ranks(tmp_path):
    """Trained k steps in one process, saved, loaded into a 2-rank group: with zero auxiliary
    weights and no capacity the group's next m steps are the single process's next m steps
    (each rank took its slice of the experts and of their optimizer state); a warning says the
    ranks' routing-noise generators were reseeded (the file holds one process's)."""
    from pwlab import config
    from pwlab.train import Trainer

    cfg = config.tiny().with_model(aux_weights={"load_balancing": 0.0, "z_loss": 0.0, "importance_load": 0.0})
    cfg = cfg.with_train(batch_size=16)
    path, k, m = str(tmp_path / "single.pt"), 3, 4
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        ref = Trainer(TRAIN_TASKS, cfg)
        ref.step(k)
        ref.save(path)
        ref.step(m)
    finally:
        torch.set_num_threads(threads)
    results = run_local(worker.load_single_process_checkpoint, 2, path, m, timeout=240)
    ref_loss = [r["loss"] for r in ref.history]
    assert max(ref_loss[k:]) - min(ref_loss[k:]) > 1e-3                       # the loss does move
    for rank, res in enumerate(results):
        assert res["start"] == k and [r["step"] for r in res["history"]] == list(range(1, k + m + 1))
        assert res["history"][:k] == [r.as_dict() for r in ref.history[:k]]      # the saved history, as saved
        loss = [r["loss"] for r in res["history"]]
        assert max(abs(a - b) for a, b in zip(loss[k:], ref_loss[k:])) < 1e-4, (rank, loss, ref_loss)
        for got, want in zip(res["experts"][1], ref.model.moe_blocks()[1].experts.weight_parameters()):
            assert torch.allclose(got, want.detach(), atol=1e-4)
        assert any("saved by 1 process(es), not 2" in w for w in res["warnings"]), res["warnings"]


@pytest.mark.slow
def test_a_restore_that_fails_on_one_rank_fails_on_every_rank(tmp_path):
    from pwlab import config

    cfg = config.tiny().with_train(batch_size=16)
    results = run_local(worker.restore_fails_on_one_rank, 2, cfg.to_dict(), TRAIN_TASKS, str(tmp_path / "c.pt"),
                        timeout=240)
    assert "rank 1" in results[0]["error"] and "is not a file" in results[0]["error"], results[0]["error"]
    assert "is not a file" in results[1]["error"]
    for rank, res in enumerate(results):
        assert res["unchanged"], f"rank {rank}: a failed restore changed the trainer"
        assert res["probe"] == 2.0, f"rank {rank}: the group fell out of step"


@pytest.mark.slow
@pytest.mark.parametrize("skip", [False, True])
def test_a_nonfinite_input_on_one_rank_is_refused_or_skipped_on_every_rank(skip):
    """Rank 1 alone holds a NaN input at step 2. Its forward would fail alone and leave rank 0
    waiting in the exchange; the ranks agree first, so both raise the same NonFiniteLossError
    naming the input (or, with skip_nonfinite, both skip the step) and no rank hangs."""
    from pwlab import config

    cfg = config.tiny().with_train(batch_size=16)
    results = run_local(worker.nonfinite_input, 2, cfg.to_dict(), TRAIN_TASKS, skip, timeout=120)
    for rank, res in enumerate(results):
        assert res["finite"]
        if not skip:
            what, where, tasks_, msg = res["error"]
            assert (what, where, tasks_) == ("input", "input", [TRAIN_TASKS[-1]]) and "step 2" in msg, (rank, msg)
            assert [r["step"] for r in res["history"]] == [1]
        else:
            assert res["error"] is None
            assert [bool(r.get("skipped")) for r in res["history"]] == [False, True, False]
            assert res["history"][1]["nonfinite"] == "forward" and res["history"][1]["where"] == "input"
