"""SWAT, sparse weight activation training (Raihan & Aamodt, NeurIPS 2020).

``topk``        top-K by magnitude: the exact threshold and kept set, in W's storage order
``functions``   the masks and the custom autograd functions (the algorithm)
``kernels``     CSR × dense matmuls with cached index sets, and the timed dense/sparse crossover
``layers``      SwatLinear, SwatConv2d (and the refresh rules every SWAT layer follows)
``calibration`` calibrate(model, rows): the one-time crossover timing ``kernel="auto"`` layers use
``experts``     SwatExpertBank, SwatGatedExpertBank (the MoE layer's stacked experts)
``convert``     swatify(model, weight_sparsity, act_sparsity, variant=...) and ERK densities
"""
from pwlab.swat.calibration import calibrate
from pwlab.swat.convert import VARIANTS, erk_densities, swatify
from pwlab.swat.functions import (SwatBmmFunction, SwatConv2dFunction, SwatLinearFunction, act_threshold,
                                  magnitude_threshold, sparsify_activation, weight_mask, weight_threshold)
from pwlab.swat.experts import SwatExpertBank, SwatGatedExpertBank
from pwlab.swat.layers import KERNELS, SwatConv2d, SwatLinear

__all__ = ["SwatLinear", "SwatConv2d", "SwatExpertBank", "SwatGatedExpertBank", "swatify", "calibrate", "erk_densities",
           "VARIANTS", "KERNELS",
           "SwatLinearFunction", "SwatConv2dFunction", "SwatBmmFunction", "magnitude_threshold", "weight_mask",
           "weight_threshold", "act_threshold", "sparsify_activation"]
