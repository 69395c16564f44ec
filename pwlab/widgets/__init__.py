"""Live apps over ``go.FigureWidget`` (figures updated in place, never rebuilt).

``RoutingPlayground``  router, top_k, capacity, noise, aux weights, experts; Play / Pause / Step / Reset
``PathwayExplorer``    a task, a sense or one example → its pathway and its tokens coloured by expert
``ExpertAblation``     experts on/off per block → per-task accuracy
``SwatExplorer``       weight / activation sparsity → mask, training FLOPs, accuracy after retraining
``LMExplorer``         a router and a layer of a character LM → its text coloured by expert

Each app has a ``.widget`` to display and a ``seed`` that makes its state reproducible.
"""
from pwlab.widgets.ablation import ExpertAblation
from pwlab.widgets.explorer import PathwayExplorer, trained_trainer
from pwlab.widgets.lm import LMExplorer
from pwlab.widgets.playground import RoutingPlayground
from pwlab.widgets.swat_explorer import SwatExplorer
from pwlab.widgets.senselive import SenseRoutingLive
from pwlab.widgets.taskmix import TaskMixExplorer
from pwlab.widgets.tradeoff import TradeoffExplorer

__all__ = ["RoutingPlayground", "PathwayExplorer", "ExpertAblation", "SwatExplorer", "LMExplorer", "trained_trainer",
           "SenseRoutingLive", "TaskMixExplorer", "TradeoffExplorer"]
