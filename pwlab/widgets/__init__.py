"""Live apps over ``go.FigureWidget`` (figures updated in place, never rebuilt).

``RoutingPlayground``  router, top_k, capacity, noise, aux weights, experts; Play / Pause / Step / Reset
``PathwayExplorer``    a task, a sense or one example → its pathway and its tokens coloured by expert
``ExpertAblation``     experts on/off per block → per-task accuracy
``SwatExplorer``       weight / activation sparsity → mask, training FLOPs, accuracy after retraining
``CostExplorer``       experts, top-k, widths → parameters, FLOPs per token, measured time (dense vs MoE)
``CapacityExplorer``   capacity factor, balance and z-loss weights → dropped tokens, load per expert, entropy
``AllToAllExplorer``   devices, tokens, width, top-k, bandwidth → all-to-all bytes and time, measured bytes
``LMExplorer``         a router and a layer of a character LM → its text coloured by expert

Each app has a ``.widget`` to display and a ``seed`` that makes its state reproducible (the
AllToAllExplorer draws a cost model: nothing random, no seed).
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
