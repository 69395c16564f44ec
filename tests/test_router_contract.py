"""The router contract: the public hook and helpers, checked routings, Routing.kind, capacity from
proposed assignments, register_router (config, Trainer, playground, checkpoints in a fresh
process), routers that describe themselves, and the documented top-p example."""
from __future__ import annotations

import importlib
import inspect
import math
import os
import subprocess
import sys
import warnings
from dataclasses import replace
from pathlib import Path

import pytest
import torch
from torch import nn

import pwlab
import pwlab.tasks as tasks
from pwlab import config
from pwlab.moe import MoE, expert_capacity
from pwlab.routing import (ROUTERS, ExpertChoice, GShardTop2, HashRouter, LinearGate, NoisyTopK, Router, Routing,
                           Switch, TaskRouter, TopK, check_routing, noise, register_router, softmax_experts,
                           token_choice, uniform, unregister_router)
from pwlab.routing import base as routing_base
from pwlab.routing.examples import TopP
from pwlab.train import Trainer

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def registry():
    """Restore ROUTERS after a test that registers routers."""
    before = dict(ROUTERS)
    yield ROUTERS
    ROUTERS.clear()
    ROUTERS.update(before)


class FixedRouter(Router):
    """Returns the same hand-written assignments for every call (a router defined outside pwlab)."""

    def __init__(self, token, expert, rank, *, top_k=1, kind="token_choice", **kw):
        self.fixed = (torch.tensor(token), torch.tensor(expert), torch.tensor(rank), kind)
        super().__init__(top_k=top_k, **kw)

    def route(self, x, *, task, token_ids, generator) -> Routing:
        token, expert, rank, kind = self.fixed
        n, e = x.shape[0], self.num_experts
        probs = torch.full((n, e), 1.0 / e)
        weight = torch.ones(token.shape[0]) + 0 * x.sum()
        return Routing(token=token, expert=expert, weight=weight, rank=rank, probs=probs, logits=probs.log(),
                       kind=kind)


# -- 1. the public hook and helpers ------------------------------------------------------

def test_the_router_author_helpers_are_exported():
    import pwlab.routing as R
    for name in ("Router", "Routing", "LinearGate", "token_choice", "softmax_experts", "noise", "uniform",
                 "check_routing", "register_router", "RouterDescription"):
        assert name in R.__all__ and getattr(R, name) is getattr(routing_base, name, getattr(R, name))
    assert pwlab.register_router is register_router and pwlab.LinearGate is LinearGate
    assert pwlab.token_choice is token_choice
    # the helpers do what a router needs: (N, k) choices → a token-major Routing
    logits = torch.tensor([[0.0, 1.0, 2.0], [2.0, 0.0, 0.0]])
    probs = softmax_experts(logits)
    assert torch.allclose(probs, logits.softmax(-1))
    r = token_choice(probs, logits, torch.tensor([[2, 1], [0, 1]]), torch.ones(2, 2))
    assert r.token.tolist() == [0, 0, 1, 1] and r.rank.tolist() == [0, 1, 0, 1] and r.expert.tolist() == [2, 1, 0, 1]
    g1, g2 = torch.Generator().manual_seed(3), torch.Generator().manual_seed(3)
    assert torch.equal(noise((4,), like=logits, generator=g1), torch.randn(4, generator=g2))
    assert uniform((5,), like=logits, generator=g1).shape == (5,)


def test_build_is_the_public_hook():
    class Scaled(LinearGate):
        def build(self):
            super().build()                                    # the gate
            self.scale = nn.Parameter(torch.full((self.num_experts,), 2.0))

        def route(self, x, *, task, token_ids, generator):
            logits = self.logits(x) * self.scale
            probs = softmax_experts(logits)
            w, e = probs.topk(self.top_k, dim=-1)
            return token_choice(probs, logits, e, w)

    with warnings.catch_warnings():
        warnings.simplefilter("error")                          # the public hook warns about nothing
        r = Scaled(top_k=2, d_model=6, num_experts=3)
    assert set(r.state_dict()) == {"gate.weight", "scale"}
    layer = MoE(6, 8, 3, Scaled(top_k=2))                       # bound (and built) by the layer
    assert layer.router.scale.shape == (3,)
    y, stats = layer(torch.randn(5, 6))
    assert y.shape == (5, 6) and stats.proposed.num_assignments == 10


def test_the_old_private_hook_still_builds_with_a_deprecation_warning():
    class Old(LinearGate):
        def _build(self):
            super()._build()
            self.extra = nn.Parameter(torch.zeros(self.num_experts))

        def route(self, x, *, task, token_ids, generator):
            logits = self.logits(x) + self.extra
            probs = softmax_experts(logits)
            w, e = probs.topk(1, dim=-1)
            return token_choice(probs, logits, e, w)

    with pytest.warns(DeprecationWarning, match="Old._build is deprecated"):
        r = Old(d_model=4, num_experts=3)
    assert set(r.state_dict()) == {"gate.weight", "extra"}


def test_builtin_routers_use_build_not_the_deprecated_name():
    for cls in set(ROUTERS.values()) | {LinearGate}:
        assert "_build" not in cls.__dict__, cls


def test_route_and_top_k_are_documented():
    doc = Router.route.__doc__
    for word in ("token", "expert", "weight", "rank", "probs", "logits", "kind", "aux_losses", "[0, N)", "[0, E)"):
        assert word in doc, word
    assert "nominal" in Router.__doc__ and "capacity" in Router.__doc__ and "build" in Router.__doc__


# -- 2. the layer checks what a router returns --------------------------------------------

N, E, D = 10, 4, 6


class BadRouter(Router):
    """A top-1 router whose routing is broken by ``spoil`` (a router written outside pwlab)."""

    def __init__(self, spoil, **kw):
        self.spoil = spoil
        super().__init__(top_k=1, **kw)

    def build(self):
        self.gate = nn.Linear(self.d_model, self.num_experts, bias=False)

    def route(self, x, *, task, token_ids, generator):
        logits = self.gate(x)
        probs = softmax_experts(logits)
        w, e = probs.max(-1, keepdim=True)
        return self.spoil(token_choice(probs, logits, e, w))


BAD = {
    "not a Routing": (lambda r: (r.expert, r.weight), TypeError, "returned a tuple"),
    "expert 2-D": (lambda r: replace(r, expert=r.expert[:, None]), ValueError, "expert has shape (10, 1)"),
    "weight shorter": (lambda r: replace(r, weight=r.weight[:-1]), ValueError, "differ in length"),
    "token longer": (lambda r: replace(r, token=torch.cat([r.token, r.token[:1]])), ValueError, "differ in length"),
    "float experts": (lambda r: replace(r, expert=r.expert.float()), TypeError, "expert has dtype torch.float32"),
    "bool ranks": (lambda r: replace(r, rank=r.rank.bool()), TypeError, "rank has dtype torch.bool"),
    "integer weights": (lambda r: replace(r, weight=r.expert.clone()), TypeError, "weight has dtype torch.int64"),
    "expert id = E": (lambda r: replace(r, expert=r.expert.clone().index_fill_(0, torch.tensor([3]), E)), ValueError,
                      "expert id 4; expert ids must be in [0, num_experts=4)"),
    "negative expert id": (lambda r: replace(r, expert=r.expert.clone().index_fill_(0, torch.tensor([0]), -1)),
                           ValueError, "expert id -1"),
    "token id = N": (lambda r: replace(r, token=r.token + 1), ValueError,
                     "token id 10; token ids must be in [0, N=10)"),
    "negative rank": (lambda r: replace(r, rank=r.rank - 1), ValueError, "rank -1"),
    "probs (N, E+1)": (lambda r: replace(r, probs=torch.zeros(N, E + 1)), ValueError,
                       "probs has shape (10, 5); it must be (N, E) = (10, 4)"),
    "logits (N-1, E)": (lambda r: replace(r, logits=r.logits[1:]), ValueError, "logits has shape (9, 4)"),
    "probs a list": (lambda r: replace(r, probs=r.probs.tolist()), TypeError, "probs is a list"),
    "unknown kind": (lambda r: replace(r, kind="tokens"), ValueError, "kind='tokens'; kind must be one of"),
}


@pytest.mark.parametrize("case", list(BAD))
@pytest.mark.parametrize("dispatch", ["fast", "loop"])
def test_a_broken_routing_gets_an_error_naming_the_router_and_the_problem(case, dispatch):
    spoil, exc, message = BAD[case]
    layer = MoE(D, 8, E, BadRouter(spoil), capacity_factor=1.0, dispatch=dispatch)
    with pytest.raises(exc) as err:
        layer(torch.randn(N, D))
    assert "BadRouter.route returned" in str(err.value) and message in str(err.value)


def test_the_unbroken_bad_router_passes():
    # the oracle for the table above: the same router, unspoiled, routes every token once
    y, stats = MoE(D, 8, E, BadRouter(lambda r: r))(torch.randn(N, D))
    assert stats.proposed.num_assignments == N and int(stats.counts.sum()) == N


def test_builtin_routers_are_trusted_and_subclasses_elsewhere_are_not():
    assert all(cls.trusted for cls in ROUTERS.values())

    class MyTopK(TopK):
        pass

    class Vouched(TopK):
        trusted = True

    assert TopK.trusted and not MyTopK.trusted and Vouched.trusted
    assert not Router.trusted and not TopP.trusted and not FixedRouter.trusted


def test_value_checks_run_only_for_untrusted_routers(monkeypatch):
    seen = []
    real = routing_base.check_routing

    def spy(routing, router, **kw):
        seen.append((type(router).__name__, kw["values"]))
        return real(routing, router, **kw)

    monkeypatch.setattr(routing_base, "check_routing", spy)

    class MyTopK(TopK):
        pass

    x = torch.randn(N, D)
    for router in (TopK(top_k=2, order="topk_softmax"), MyTopK(top_k=2), Switch()):
        layer = MoE(D, 8, E, router)
        layer.fused = False
        layer(x)
    assert seen == [("TopK", False), ("MyTopK", True), ("Switch", False)]


def test_check_routing_accepts_every_builtin_routing():
    from routing_cases import ROUTER_CASES, route_inputs
    x = torch.randn(12, D)
    for name, make in ROUTER_CASES.items():
        router = make().bind(D, E)
        r = router(x, **route_inputs(12))
        check_routing(r, router, num_tokens=12, num_experts=E, device=x.device, values=True)   # raises nothing


# -- 3. Routing.kind, not the class name ---------------------------------------------------

class RenamedExpertChoice(ExpertChoice):
    """Expert choice under another class name."""


def test_a_subclass_of_expert_choice_gets_no_capacity_from_the_layer():
    # N=16, E=4, the router's factor 2: each expert takes C = ceil(16·2/4) = 8 tokens, A = 32.
    # The layer's capacity_factor 0.5 would give C = ceil(0.5·2·16/4) = 4 and drop half.
    layer = MoE(8, 16, 4, RenamedExpertChoice(capacity_factor=2.0))
    assert layer.capacity_factor == 2.0                 # the layer's one factor is the router's
    y, stats = layer(torch.randn(16, 8))
    assert stats.proposed.kind == "expert_choice" and stats.capacity is None
    assert int(stats.kept.sum()) == 32 and stats.counts.tolist() == [8, 8, 8, 8]
    assert layer.router_kind == "expert_choice"
    # the same as the built-in class with the same weights
    ref = MoE(8, 16, 4, ExpertChoice(capacity_factor=2.0), capacity_factor=2.0)
    ref.load_state_dict(layer.state_dict())
    x = torch.randn(16, 8)
    assert torch.equal(layer(x)[0], ref(x)[0])


def test_the_layer_follows_the_routings_kind():
    # a router that declares nothing but returns expert-choice routings: E=2 experts each
    # take all 4 tokens (A = 8); as token choice, capacity_factor 0.5 leaves ceil(0.5·8/2) = 2 slots each
    router = FixedRouter([0, 1, 2, 3, 0, 1, 2, 3], [0, 0, 0, 0, 1, 1, 1, 1], [0] * 8, kind="expert_choice")
    y, stats = MoE(3, 4, 2, router, capacity_factor=0.5)(torch.randn(4, 3))
    assert stats.capacity is None and bool(stats.kept.all()) and stats.counts.tolist() == [4, 4]
    # the same assignments as token choice are capped at 2 per expert, the first two tokens
    router = FixedRouter([0, 1, 2, 3, 0, 1, 2, 3], [0, 0, 0, 0, 1, 1, 1, 1], [0] * 8)
    y, stats = MoE(3, 4, 2, router, capacity_factor=0.5)(torch.randn(4, 3))
    assert stats.capacity == 2 and stats.counts.tolist() == [2, 2]
    assert stats.kept.tolist() == [True, True, False, False] * 2


# -- 4. capacity from the assignments proposed ---------------------------------------------

def test_expert_capacity_counts_the_proposed_assignments():
    assert expert_capacity(4, 2, 1, 1.0, num_assignments=6) == 3             # ceil(6/2), not ceil(4/2)
    assert expert_capacity(4, 2, 1, 1.0) == 2
    assert expert_capacity(100, 8, 1, 1.0, num_assignments=290) == 37       # ceil(290/8) = ceil(36.25)
    assert expert_capacity(100, 8, 2, 1.25, num_assignments=200) == 32      # A = N·k: today's formula
    assert expert_capacity(100, 8, 2, 1.0, num_assignments=150) == 25       # fewer (GShard): the declared budget
    assert expert_capacity(100, 8, 1, 1.0, "tokens", num_assignments=290) == 13   # k folded into cf
    assert expert_capacity(100, 8, 1, None, num_assignments=290) is None


def test_a_router_proposing_more_than_it_declares_keeps_its_assignments():
    # N=4 tokens, E=2 experts, top_k=1 declared, A=6 proposed (3 per expert):
    # C = ceil(1.0·6/2) = 3 keeps all six; ceil(1.0·1·4/2) = 2 would keep four
    router = FixedRouter([0, 0, 1, 1, 2, 3], [0, 1, 0, 1, 0, 1], [0, 1, 0, 1, 0, 0])
    layer = MoE(3, 4, 2, router, capacity_factor=1.0)
    y, stats = layer(torch.randn(4, 3))
    assert stats.capacity == 3 and int(stats.kept.sum()) == 6 and stats.counts.tolist() == [3, 3]
    assert layer.capacity(4) == 2 and layer.capacity(4, 6) == 3


def test_top_p_capacity_is_sized_from_its_assignments():
    torch.manual_seed(0)
    n, e = 256, 8
    layer = MoE(16, 16, e, TopP(p=0.6, top_k=1), capacity_factor=1.0).eval()
    x = torch.randn(n, 16)
    y, stats = layer(x)
    a = stats.proposed.num_assignments
    assert a > 2 * n                                          # about 3 experts per token, declared 1
    counts = stats.proposed_counts
    cap = math.ceil(a / e)
    assert stats.capacity == cap
    assert int(stats.kept.sum()) == int(counts.clamp(max=cap).sum())     # each expert keeps min(count, C)
    old = int(counts.clamp(max=math.ceil(n / e)).sum())                  # C = ceil(N·1/E) = 32
    assert old / a < 0.5 < int(stats.kept.sum()) / a
    # the layer's output is the loop reference's
    loop = MoE(16, 16, e, TopP(p=0.6, top_k=1), capacity_factor=1.0, dispatch="loop").eval()
    loop.load_state_dict(layer.state_dict())
    assert torch.allclose(loop(x)[0], y, atol=1e-6)


def test_top_p_routing_by_hand():
    router = TopP(p=0.7, top_k=1, d_model=3, num_experts=3)
    with torch.no_grad():
        router.gate.weight.copy_(torch.eye(3))
    # token 0: probs ∝ e^(2, 1, 0) = (.665, .245, .090): .665 < .7, so two experts
    # token 1: probs ∝ e^(0, 0, 4) = (.018, .018, .965): one expert
    r = router(torch.tensor([[2.0, 1.0, 0.0], [0.0, 0.0, 4.0]]))
    assert r.token.tolist() == [0, 0, 1] and r.expert.tolist() == [0, 1, 2] and r.rank.tolist() == [0, 1, 0]
    assert torch.allclose(r.weight, r.probs[r.token, r.expert])


# -- 5. register_router --------------------------------------------------------------------

def test_register_router_refuses_what_it_cannot_use(registry):
    with pytest.raises(TypeError, match="cls must be a subclass of pwlab.routing.Router"):
        register_router("mine", nn.Linear)
    with pytest.raises(ValueError, match="name must be a Python identifier"):
        register_router("top p", TopP)
    with pytest.raises(ValueError, match="'topk' is a built-in router"):
        register_router("topk", TopP)
    register_router("top_p", TopP)
    register_router("top_p", TopP)                            # again: allowed

    class Other(TopP):
        pass

    with pytest.raises(ValueError, match="already registered to pwlab.routing.examples.TopP"):
        register_router("top_p", Other)
    register_router("top_p", Other, replace=True)
    assert ROUTERS["top_p"] is Other
    unregister_router("top_p")
    assert "top_p" not in ROUTERS
    with pytest.raises(ValueError, match="built-in"):
        unregister_router("topk")


def test_a_registered_router_is_usable_from_the_config(registry):
    with pytest.raises(ValueError, match="or a name given to pwlab.register_router"):
        config.ModelConfig(router="top_p")
    register_router("top_p", TopP)
    cfg = config.ModelConfig(router="top_p", top_k=2, router_kwargs={"p": 0.8}, d_model=16, num_heads=2)
    assert cfg.router_arguments(num_tasks=3) == {"p": 0.8, "top_k": 2}     # TopP takes top_k: the config's
    assert cfg.active_k == 2 and cfg.ffn_hidden == 2 * cfg.d_hidden

    class Fixed3(LinearGate):                                # takes no k: fixes its own
        def __init__(self, **kw):
            super().__init__(top_k=3, **kw)

    register_router("three", Fixed3)
    cfg = config.ModelConfig(router="three", top_k=1)
    assert "k" not in cfg.router_arguments(num_tasks=1) and cfg.active_k == 3


def test_the_playground_lists_a_registered_router_with_its_knobs(registry):
    pytest.importorskip("ipywidgets")
    from pwlab.widgets.playground import RoutingPlayground, noise_knob
    register_router("top_p", TopP)
    cfg = config.tiny().with_model(router="top_p", top_k=1, router_kwargs={"p": 0.5}, d_model=16, d_hidden=16)
    app = RoutingPlayground(["wine"], cfg, batch_size=8, pathway_examples=2)
    assert "top_p" in app.router.options and app.router.value == "top_p"
    assert not app.top_k.disabled and app.noise.disabled and not app.capacity.disabled
    app.router.value = "noisy_topk"                           # knobs follow the description
    assert app.noise.value == 0.0 and not app.noise.disabled and noise_knob("noisy_topk") == "noise_eps"
    app.router.value = "expert_choice"
    assert app.capacity.disabled and app.top_k.disabled


ROUTER_MODULE = '''
"""A router defined outside pwlab, registered on import."""
from pwlab import register_router
from pwlab.routing.examples import TopP


class LabTopP(TopP):
    """The documented top-p router, as a class of this module."""


register_router("lab_top_p", LabTopP)
'''

CHILD = '''
import sys
import torch
from pwlab.train import Trainer
path, out = sys.argv[1], sys.argv[2]
if out != "-":
    import lab_router_mod   # registers lab_top_p
trainer = Trainer.load(path)
model = trainer.model.eval()
with torch.no_grad():
    torch.save(model(list(model.batches("wine", "test", 16))).predictions["wine"], out)
'''


def test_a_registered_router_trains_saves_and_loads_in_a_fresh_process(registry, tmp_path, monkeypatch):
    (tmp_path / "lab_router_mod.py").write_text(ROUTER_MODULE)
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, "lab_router_mod", raising=False)
    mod = importlib.import_module("lab_router_mod")
    assert ROUTERS["lab_top_p"] is mod.LabTopP
    cfg = config.Config(config.ModelConfig(d_model=16, num_heads=2, num_experts=4, d_hidden=16, router="lab_top_p",
                                           top_k=1, router_kwargs={"p": 0.7}, capacity_factor=1.0),
                        config.TrainConfig(batch_size=16, lr=3e-3), name="top_p")
    trainer = Trainer(tasks.load(["wine", "digit_words"]), cfg)
    recs = trainer.step(3)
    assert len(recs) == 3 and all(math.isfinite(r["loss"]) for r in recs)
    assert [type(m.router) for m in trainer.model.moe_blocks().values()] == [mod.LabTopP]
    ckpt = tmp_path / "top_p.pt"
    trainer.save(ckpt)
    model = trainer.model.eval()
    with torch.no_grad():
        want = model(list(model.batches("wine", "test", 16))).predictions["wine"]
    monkeypatch.delitem(sys.modules, "lab_router_mod")

    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(tmp_path), str(ROOT), os.environ.get("PYTHONPATH", "")]))
    run = [sys.executable, "-c", CHILD, str(ckpt)]
    missing = subprocess.run(run + ["-"], env=env, capture_output=True, text=True, timeout=300)
    assert missing.returncode != 0
    last = missing.stderr.strip().splitlines()[-1]
    assert last.startswith("ValueError") and "uses router 'lab_top_p' (lab_router_mod.LabTopP)" in last
    assert "not registered in this process: import lab_router_mod" in last
    out = tmp_path / "pred.pt"
    ok = subprocess.run(run + [str(out)], env=env, capture_output=True, text=True, timeout=300)
    assert ok.returncode == 0, ok.stderr
    assert torch.equal(torch.load(out), want)


def test_the_checkpoint_names_the_router(registry, tmp_path):
    register_router("top_p", TopP)
    cfg = config.Config(config.ModelConfig(d_model=16, num_heads=2, num_experts=4, d_hidden=16, router="top_p",
                                           top_k=1), config.TrainConfig(batch_size=8), name="t")
    trainer = Trainer(tasks.load(["wine"]), cfg)
    trainer.save(tmp_path / "c.pt")
    state = torch.load(tmp_path / "c.pt", weights_only=True)
    assert state["router"] == {"name": "top_p", "class": "pwlab.routing.examples.TopP"}
    unregister_router("top_p")
    with pytest.raises(ValueError, match=r"uses router 'top_p' \(pwlab.routing.examples.TopP\), which is not "
                                         r"registered in this process: import pwlab.routing.examples"):
        Trainer.load(tmp_path / "c.pt")
    register_router("top_p", TopP)
    assert Trainer.load(tmp_path / "c.pt").config.model.router == "top_p"


# -- 6. routers describe themselves --------------------------------------------------------

def test_every_builtin_router_describes_its_knobs():
    d = {name: cls.describe() for name, cls in ROUTERS.items() if name in
         ("topk", "noisy_topk", "switch", "gshard", "expert_choice", "hash", "task")}
    assert {n for n, x in d.items() if x.top_k} == {"topk", "noisy_topk", "task"}
    assert {n: x.noise for n, x in d.items() if x.noise} == {"noisy_topk": "noise_eps", "switch": "jitter"}
    assert {n for n, x in d.items() if x.owns_capacity} == {"expert_choice"}
    assert d["expert_choice"].kind == "expert_choice" and d["topk"].kind == "token_choice"
    assert {n for n, x in d.items() if x.needs_task} == {"task"} == {n for n, x in d.items() if x.num_tasks}
    assert {n for n, x in d.items() if x.needs_token_ids} == {"hash"}
    assert all(x.temperature is None for x in d.values())
    # the noise knob is a real constructor argument and attribute
    assert NoisyTopK(noise_eps=0.3).noise_eps == 0.3 and Switch(jitter=0.2).jitter == 0.2
    assert TaskRouter.describe().name == "TaskRouter" and HashRouter.describe().trusted
    assert GShardTop2.describe().top_k is False


def test_config_and_playground_read_descriptions_not_name_lists():
    for path in ("pwlab/config.py", "pwlab/widgets/playground.py"):
        text = (ROOT / path).read_text()
        assert "_ROUTERS_WITH_K" not in text and "NOISE_KNOB" not in text and '"expert_choice"' not in text, path


# -- 7. the documented example --------------------------------------------------------------

def test_the_architecture_doc_quotes_the_tested_example():
    doc = (ROOT / "docs" / "architecture.md").read_text()
    assert "## Write your own router" in doc
    assert inspect.getsource(TopP) in doc              # the doc shows exactly the class tested here
    assert 'register_router("top_p", TopP)' in doc


def test_the_documented_example_runs_as_the_doc_says(registry):
    doc = (ROOT / "docs" / "architecture.md").read_text()
    section = doc.split("## Write your own router")[1].split("\n## ")[0]
    usage = section.split("Using it:")[1].split("```python\n")[1].split("```")[0]
    scope = {}
    exec(usage, scope)                                          # the doc's usage snippet, as written
    recs = scope["trainer"].step(2)
    assert len(recs) == 2 and ROUTERS["top_p"] is TopP
    assert {type(m.router) for m in scope["trainer"].model.moe_blocks().values()} == {TopP}
    torch.manual_seed(0)
    layer = MoE(16, 32, 8, TopP(p=0.9, top_k=2), capacity_factor=1.25)
    y, stats = layer(torch.randn(64, 16))
    y.sum().backward()
    assert layer.router.gate.weight.grad.abs().sum() > 0          # the weights carry the task's gradient
    assert stats.capacity == math.ceil(1.25 * max(stats.proposed.num_assignments, 64 * 2) / 8)
    cfg = config.tiny().model
    cfg = replace(cfg, router="top_p", top_k=2, router_kwargs={"p": 0.9})
    model = pwlab.PathwaysModel(tasks.load(["wine"]), cfg)
    routers = [m.router for m in model.moe_blocks().values()]
    assert len(routers) == 1 and type(routers[0]) is TopP and routers[0].p == 0.9 and routers[0].top_k == 2


def test_each_router_slices_itself_to_a_subset_of_experts():
    """Router.sliced_state: the routers say which tensors run over the experts. A learned task
    router with as many tasks as experts (4 and 4) is sliced on its expert axis (1), a gate on
    axis 0; hash and fixed task
    tables remapped, dropped experts' ids to 0."""
    from pwlab.routing import HashRouter, TaskRouter, TopK
    keep = [1, 3]
    task = TaskRouter(num_tasks=4, top_k=1, mode="learned", d_model=6, num_experts=4)
    w = task.state_dict()["task_logits.weight"]
    assert torch.equal(task.sliced_state(keep)["task_logits.weight"], w[:, keep])
    topk = TopK(top_k=1, bias_update_rate=1e-3, d_model=6, num_experts=4)
    got = topk.sliced_state(keep)
    assert torch.equal(got["gate.weight"], topk.gate.weight.detach()[keep])
    assert got["expert_bias"].shape == (2,)
    fixed = TaskRouter(num_tasks=4, top_k=1, mode="fixed", d_model=6, num_experts=4)
    assert fixed.table.flatten().tolist() == [0, 1, 2, 3]
    assert fixed.sliced_state(keep)["table"].flatten().tolist() == [0, 0, 0, 1]
    h = HashRouter(num_buckets=8, d_model=6, num_experts=4)
    want = [{1: 0, 3: 1}.get(int(e), 0) for e in h.table]
    assert h.sliced_state(keep)["table"].tolist() == want
    small = TaskRouter(num_tasks=4, top_k=1, mode="learned", d_model=6, num_experts=2)
    small.load_state_dict(task.sliced_state(keep))           # loads into a 2-expert router
    t = torch.arange(4)
    x = torch.zeros(4, 6)
    assert torch.allclose(small(x, task=t).logits, task(x, task=t).logits[:, keep])


def test_one_capacity_factor_per_layer():
    """Under expert choice the layer's capacity factor is the router's: set twice is refused,
    set through the layer reaches the router (C = ceil(N·cf/E) by hand), None is refused."""
    with pytest.raises(ValueError, match=r"capacity_factor is set twice.*ExpertChoice\(capacity_factor=0.5\)"):
        MoE(8, 16, 4, ExpertChoice(capacity_factor=2.0), capacity_factor=0.5)
    layer = MoE(8, 16, 4, ExpertChoice(capacity_factor=2.0))
    layer.capacity_factor = 0.5                           # C = ceil(16·0.5/4) = 2 tokens per expert
    assert layer.router.capacity_factor == 0.5 and layer.top_k == 1
    _, stats = layer(torch.randn(16, 8))
    assert stats.counts.tolist() == [2, 2, 2, 2]
    with pytest.raises(ValueError, match="no dropless expert choice"):
        layer.capacity_factor = None
    with pytest.raises(ValueError, match=r"capacity_factor must be in \(0, num_experts=4\]"):
        layer.capacity_factor = 5.0
    assert layer.capacity_factor == 0.5                   # a refused value changes nothing
    # token choice: the layer's own, None included
    tc = MoE(8, 16, 4, capacity_factor=1.0)
    tc.capacity_factor = None
    assert tc.capacity_factor is None and tc.capacity(16) is None
    with pytest.raises(ValueError, match="capacity_factor"):
        tc.capacity_factor = -1.0


def test_one_capacity_factor_per_config():
    """A config's capacity_factor is expert choice's own factor; set twice differently is refused."""
    from pwlab.config import ModelConfig
    from pwlab.model import make_moe
    cfg = ModelConfig(router="expert_choice", capacity_factor=1.5, num_experts=4)
    layer = make_moe(cfg, num_tasks=1)
    assert layer.capacity_factor == 1.5 and layer.router.capacity_factor == 1.5
    assert make_moe(ModelConfig(router="expert_choice", num_experts=4), 1).capacity_factor == 2.0   # its default
    with pytest.raises(ValueError, match="capacity_factor is set twice"):
        ModelConfig(router="expert_choice", capacity_factor=1.5, router_kwargs={"capacity_factor": 2.0})
