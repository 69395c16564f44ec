"""Figures: pure functions from plain stats (history records, pathway maps, example routings,
SWAT masks and results) to ``plotly.graph_objects.Figure``. No model code, no widgets.

Empty or missing input gives an empty figure with a note, never an exception.
"""
from pwlab.viz.ablation import ablation_bars
from pwlab.viz.claims import sweep_figure
from pwlab.viz._common import EXPERT_COLORS, SENSE_COLORS, empty_figure
from pwlab.viz.example import example_routing
from pwlab.viz.pathways import expert_heatmaps, pathway_sankey, sense_bars
from pwlab.viz.swat import sparsity_tradeoff, weight_mask
from pwlab.viz.training import expert_load, load_over_training, task_curves

__all__ = ["pathway_sankey", "expert_heatmaps", "sense_bars", "example_routing", "task_curves",
           "load_over_training", "expert_load", "weight_mask", "sparsity_tradeoff", "ablation_bars", "sweep_figure",
           "empty_figure", "EXPERT_COLORS", "SENSE_COLORS"]
