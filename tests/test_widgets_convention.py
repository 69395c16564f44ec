"""One constructor convention for every app of pwlab.widgets (see the module docstring there).

Model apps: ``App(tasks=None, config=None, *, trainer=None, seed=None, ...)``; apps over other
data: ``App(data..., *, ...)``; every knob keyword-only.
"""
from __future__ import annotations

import inspect

import pytest

import pwlab.tasks as T
import pwlab.widgets as pw
from pwlab.config import tiny
from pwlab.train import Trainer
from pwlab.widgets._common import DEFAULT_TASKS, model_args

NAMES = ("digit_words", "wine")                     # two senses, quick to load

#: the apps over a multi-task model; the value says whether it reuses a trainer (``trainer=``)
MODEL_APPS = {"RoutingPlayground": True, "PathwayExplorer": True, "ExpertAblation": True, "SwatExplorer": True,
              "SenseRoutingLive": True, "TaskMixExplorer": False}
#: the apps over other data: their positional parameters (the data they show)
DATA_APPS = {"TradeoffExplorer": ("runs",), "LMExplorer": ("models", "text"), "CapacityExplorer": ("data",),
             "AllToAllExplorer": ("measured",), "CostExplorer": ()}
#: apps with nothing random in them: no seed
NO_SEED = {"TradeoffExplorer", "LMExplorer", "AllToAllExplorer"}

P = inspect.Parameter


@pytest.fixture(scope="module", autouse=True)
def _one_thread(one_thread):
    """Every test of this module runs on one torch thread (see conftest's ``one_thread``)."""


@pytest.fixture(scope="module")
def tasks():
    return [T.get(n, seed=0) for n in NAMES]


@pytest.fixture(scope="module")
def cfg():
    return tiny().with_model(d_model=16, d_hidden=16).with_train(batch_size=16, eval_examples=32)


@pytest.fixture(scope="module")
def trained(tasks, cfg):
    tr = Trainer(tasks, cfg)
    tr.step(5)
    return tr


def _apps():
    return {n: getattr(pw, n) for n in pw.__all__ if inspect.isclass(getattr(pw, n))}


def _params(cls):
    return list(inspect.signature(cls.__init__).parameters.values())[1:]      # without self


def test_every_app_is_classified():
    # a new app must be placed in one of the two families (and so checked below)
    assert set(_apps()) == set(MODEL_APPS) | set(DATA_APPS)


@pytest.mark.parametrize("name", sorted(MODEL_APPS))
def test_model_app_signature(name):
    params = _params(_apps()[name])
    positional = [p for p in params if p.kind is P.POSITIONAL_OR_KEYWORD]
    assert [(p.name, p.default) for p in positional] == [("tasks", None), ("config", None)]
    rest = params[len(positional):]
    assert rest and all(p.kind is P.KEYWORD_ONLY for p in rest), [p for p in rest if p.kind is not P.KEYWORD_ONLY]
    kw = {p.name: p.default for p in rest}
    assert kw["seed"] is None
    if MODEL_APPS[name]:
        assert list(kw)[:2] == ["trainer", "seed"] and kw["trainer"] is None
    else:
        assert "trainer" not in kw and list(kw)[0] == "seed"


@pytest.mark.parametrize("name", sorted(DATA_APPS))
def test_data_app_signature(name):
    params = _params(_apps()[name])
    positional = [p for p in params if p.kind is P.POSITIONAL_OR_KEYWORD]
    assert tuple(p.name for p in positional) == DATA_APPS[name]
    rest = params[len(positional):]
    assert all(p.kind is P.KEYWORD_ONLY for p in rest), [p for p in rest if p.kind is not P.KEYWORD_ONLY]
    names = [p.name for p in rest]
    assert "trainer" not in names and "tasks" not in [p.name for p in positional]
    assert ("seed" in names) == (name not in NO_SEED)


@pytest.mark.parametrize("name", sorted(MODEL_APPS))
def test_a_positional_trainer_is_refused_with_a_pointer_to_trainer_keyword(name, trained):
    cls = _apps()[name]
    hint = rf"{name}\(trainer=\.\.\.\)" if MODEL_APPS[name] else "takes no trainer"
    with pytest.raises(ValueError, match=rf"{name} got a Trainer as tasks; .*{hint}"):
        cls(trained)
    with pytest.raises(ValueError, match=rf"{name} got a Trainer as config"):
        cls(None, trained)


@pytest.mark.parametrize("name", [n for n, reuse in sorted(MODEL_APPS.items()) if reuse])
def test_conflicting_tasks_config_or_seed_beside_a_trainer_are_refused(name, trained):
    cls = _apps()[name]
    mine = r"\['digit_words', 'wine'\]"
    with pytest.raises(ValueError, match=rf"tasks \['wine'\] conflict with the trainer's tasks {mine}"):
        cls(["wine"], trainer=trained)
    with pytest.raises(ValueError, match="config 'small' conflicts with the trainer's config"):
        cls(config="small", trainer=trained)
    with pytest.raises(ValueError, match="seed=7 conflicts with the trainer's seed 0"):
        cls(trainer=trained, seed=7)
    with pytest.raises(ValueError, match="trainer must be a pwlab.train.Trainer, got str"):
        cls(trainer="tiny")


def test_model_args_with_a_trainer_takes_its_tasks_config_and_seed(trained, cfg):
    a = model_args("App", trainer=trained)
    assert a.trainer is trained and a.config is trained.config and a.seed == 0
    assert [t.name for t in a.tasks] == list(NAMES)
    # the same tasks (by name or object), config and seed beside it agree: accepted
    b = model_args("App", list(NAMES), cfg, trainer=trained, seed=0)
    assert b.trainer is trained and b.config is trained.config
    assert model_args("App", trained.tasks, trainer=trained).trainer is trained


def test_model_args_without_a_trainer():
    a = model_args("App", ["wine"], "tiny", seed=3)
    assert a.trainer is None and a.seed == 3 and a.config.train.seed == 3 and a.config.name == "tiny"
    assert [t.name for t in a.tasks] == ["wine"]
    d = model_args("App")                                   # the defaults: tiny, its seed, one task per sense
    assert d.seed == tiny().train.seed == 0 and d.config.to_dict() == tiny().to_dict()
    assert tuple(t.name for t in d.tasks) == DEFAULT_TASKS
    with pytest.raises(ValueError, match="seed must be an integer >= 0"):
        model_args("App", ["wine"], seed=-1)
    with pytest.raises(ValueError, match="config must be a preset name or a pwlab.config.Config, got int"):
        model_args("App", ["wine"], 3)
    with pytest.raises(ValueError, match="preset must be one of"):
        model_args("App", ["wine"], "huge")
    with pytest.raises(ValueError, match="config must have at least one MoE layer"):
        model_args("App", ["wine"], tiny().with_model(moe_layers="none"))
    assert model_args("App", ["wine"], tiny().with_model(moe_layers="none"), need_moe=False).seed == 0


def test_trainer_keyword_reuses_the_model_untrained_further(trained):
    steps = trained.step_count
    state = {k: v.clone() for k, v in trained.model.state_dict().items()}
    ex = pw.PathwayExplorer(trainer=trained, max_examples=8)
    ab = pw.ExpertAblation(trainer=trained, max_examples=8)
    sw = pw.SwatExplorer(trainer=trained, retrain_steps=1, max_examples=8)
    live = pw.SenseRoutingLive(trainer=trained, pathway_examples=4)
    pg = pw.RoutingPlayground(trainer=trained, pathway_examples=4)
    for app in (ex, ab, sw, live, pg):
        assert app.trainer is trained, type(app).__name__
    assert ex.model is trained.model and ab.model is trained.model and sw.base is trained.model
    assert trained.step_count == steps
    assert all((v == state[k]).all() for k, v in trained.model.state_dict().items())
    # the playground's knobs start at the trainer's config, batch size included (the config leaves
    # the aux weights to the MoE's defaults; the knobs spell out those defaults)
    knobs, mine = pg.config().to_dict(), trained.config.to_dict()
    knobs["model"].pop("aux_weights"), mine["model"].pop("aux_weights")
    assert knobs == mine
    moe = next(iter(trained.model.moe_blocks().values()))
    assert (pg.load_balancing.value, pg.z_loss.value) == (moe.aux_weights["load_balancing"], moe.aux_weights["z_loss"])
    assert pg.batch_size.value == trained.config.train.batch_size != 32
    assert sw.seed == ex.seed == live.seed == trained.config.train.seed


def test_apps_built_from_tasks_and_config_follow_the_seed(tasks, cfg):
    ex = pw.PathwayExplorer(tasks, cfg, seed=2, pretrain_steps=2, max_examples=8)
    assert ex.seed == 2 and ex.trainer.config.train.seed == 2 and ex.trainer.step_count == 2
    assert [t.name for t in ex.trainer.tasks] == list(NAMES)
