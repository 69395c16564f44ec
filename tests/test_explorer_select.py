"""PathwayExplorer.select: its documented modes and what it refuses."""
from __future__ import annotations

import pytest
import torch

import pwlab.tasks as T
from pwlab import Trainer, tiny
from pwlab.widgets import PathwayExplorer

NAMES = ("digits", "wine")


@pytest.fixture(scope="module")
def explorer():
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    cfg = tiny().with_model(d_model=16, d_hidden=16).with_train(batch_size=16, eval_examples=32)
    tr = Trainer([T.get(n, seed=0) for n in NAMES], cfg)
    tr.step(3)
    yield PathwayExplorer(trainer=tr, max_examples=8)
    torch.set_num_threads(n)


def test_each_mode_lists_the_choices_its_docstring_names(explorer):
    explorer.select(mode="sense")
    assert list(explorer.choice.options) == ["image", "tabular"]
    explorer.select(mode="example", choice="wine", example=3)
    assert list(explorer.choice.options) == list(NAMES) and explorer.example.value == 3
    explorer.select(mode="task", choice="digits")
    assert explorer.choice.value == "digits"


@pytest.mark.parametrize("kw, words", [
    (dict(mode="tasks"), ["mode must be one of", "'task', 'sense', 'example'"]),
    (dict(mode="task", choice="image"), ["choice must be one of", "'digits', 'wine'", "'task'"]),
    (dict(mode="sense", choice="digits"), ["choice must be one of", "'image', 'tabular'"]),
    (dict(mode="task", choice="wine", example=10_000), ["example must be in 0..", "'wine'"]),
])
def test_select_refuses_what_no_control_offers_and_names_the_options(explorer, kw, words):
    with pytest.raises(ValueError) as e:
        explorer.select(**kw)
    assert all(w in str(e.value) for w in words), str(e.value)
