"""Live apps over ``go.FigureWidget`` (figures updated in place, never rebuilt).

``RoutingPlayground``  router, top_k, capacity, noise, aux weights, experts; Play / Pause / Step / Reset
``PathwayExplorer``    a task, a sense or one example → its pathway and its tokens coloured by expert
``ExpertAblation``     experts on/off per block → per-task accuracy
``SwatExplorer``       weight / activation sparsity → mask, training FLOPs, accuracy after retraining
``SenseRoutingLive``   per-sense routing bars (LIMoE-style) and I(E; sense), live over training
``TaskMixExplorer``    task-mix temperature and routing level → per-task accuracy and interference
``CostExplorer``       experts, top-k, widths → parameters, FLOPs per token, measured time (dense vs MoE)
``CapacityExplorer``   capacity factor, balance and z-loss weights → dropped tokens, load per expert, entropy
``AllToAllExplorer``   devices, tokens, width, top-k, bandwidth → all-to-all bytes and time, measured bytes
``TradeoffExplorer``   runs → accuracy against training FLOPs and parameters
``LMExplorer``         a router and a layer of a character LM → its text coloured by expert

One constructor convention for every app: what the app shows is positional, every knob is
keyword-only.

- Apps over a multi-task model (``RoutingPlayground``, ``PathwayExplorer``, ``ExpertAblation``,
  ``SwatExplorer``, ``SenseRoutingLive``, ``TaskMixExplorer``)::

      App(tasks=None, config=None, *, trainer=None, seed=None, ...knobs)

  ``tasks``: names or Task objects (None: one task per sense); ``config``: a preset name or a
  :class:`pwlab.config.Config` (None: ``"tiny"``); ``seed``: seeds the model, its training and
  the tasks' data (None: the config's ``train.seed``). A model already trained is reused with
  ``App(trainer=tr)``: tasks, config and seed are then the trainer's, and a ``tasks``,
  ``config`` or ``seed`` given beside it must agree with it (else a ValueError names the
  conflict). A Trainer passed positionally is refused with a pointer to ``trainer=``.
  ``TaskMixExplorer`` trains a fresh model for every setting it shows and so takes no
  ``trainer=``. The arguments are resolved in one place, :func:`pwlab.widgets._common.model_args`.
- Apps over other data keep that data positional: ``TradeoffExplorer(runs, *, ...)``,
  ``LMExplorer(models, text, *, ...)``, ``CapacityExplorer(data=None, *, ...)``,
  ``AllToAllExplorer(measured=None, *, ...)``; ``CostExplorer(*, ...)`` has only knobs.

Each app has a ``.widget`` to display and, where anything in it is random, a keyword ``seed``
that makes its state reproducible (the AllToAllExplorer draws a cost model, the LMExplorer and
the TradeoffExplorer show what they are given: nothing random, no seed).
"""
from pwlab.widgets.a2a import AllToAllExplorer
from pwlab.widgets.ablation import ExpertAblation
from pwlab.widgets.capacity import CapacityExplorer
from pwlab.widgets.cost import CostExplorer
from pwlab.widgets.explorer import PathwayExplorer, trained_trainer
from pwlab.widgets.lm import LMExplorer
from pwlab.widgets.playground import RoutingPlayground
from pwlab.widgets.swat_explorer import SwatExplorer
from pwlab.widgets.senselive import SenseRoutingLive
from pwlab.widgets.taskmix import TaskMixExplorer
from pwlab.widgets.tradeoff import TradeoffExplorer

__all__ = ["RoutingPlayground", "PathwayExplorer", "ExpertAblation", "SwatExplorer", "LMExplorer", "trained_trainer",
           "SenseRoutingLive", "TaskMixExplorer", "TradeoffExplorer", "CostExplorer", "CapacityExplorer",
           "AllToAllExplorer"]
