"""Pathways Lab: sparse activation, many tasks, many senses and SWAT, in a small PyTorch core.

The table of contents (explicit re-exports; nothing here imports plotly or ipywidgets —
figures live in :mod:`pwlab.viz`, apps in :mod:`pwlab.widgets`, multi-process code in
:mod:`pwlab.distributed`, the measured claims in :mod:`pwlab.experiments`).

    routing     Routing, Router and every router (TopK, NoisyTopK, Switch, GShardTop2,
                ExpertChoice, HashRouter, TaskRouter); register_router for your own
    moe         MoE (route → capacity → dispatch → experts → combine), MoEStats; SoftMoE
    losses      load balancing, z-loss, CV², LIMoE entropies
    swat        SwatLinear, SwatConv2d, swatify
    flops       analytic FLOP counts
    tasks       the offline task suite and multi-task sampling
    senses      encoders from image, audio, text and tables into one token space
    config      Config and the presets tiny(), small(), dense_baseline()
    model       PathwaysModel, ModelOutput
    observe     observe → Observation: one eval pass (routes, predictions, losses per example)
    history     the Trainer's typed records: StepRecord, SkippedRecord, EvalRecord
    train       Trainer, evaluate_model, NonFiniteLossError, NonFiniteGradientError
    checkpoint  CheckpointIntegrityError
    pathways    pathway maps, mutual information, ablation, subnetwork extraction
"""
from pwlab import flops, losses, senses, tasks
from pwlab.checkpoint import CheckpointIntegrityError
from pwlab.config import PRESETS, Config, ModelConfig, TrainConfig, dense_baseline, preset, small, tiny
from pwlab.experts import ExpertBank, GatedExpertBank
from pwlab.history import BlockRecord, EvalRecord, SkippedRecord, StepRecord
from pwlab.model import ModelOutput, PathwaysModel
from pwlab.moe import MoE, MoEStats
from pwlab.observe import Observation, observe
from pwlab.pathways import (ExampleRouting, PathwayMap, disable_experts, extract_subnetwork, mutual_information,
                            pathway_map, route_example, top_pathway)
from pwlab.routing import (ROUTERS, ExpertChoice, GShardTop2, HashRouter, LinearGate, NoisyTopK, Router, Routing,
                           Switch, TaskRouter, TopK, make_router, register_router, token_choice)
from pwlab.senses import SENSES, Senses, Tokens
from pwlab.soft_moe import SoftMoE
from pwlab.swat import SwatConv2d, SwatExpertBank, SwatLinear, swatify
from pwlab.tasks import MultiTaskSampler, Task, TaskBatch
from pwlab.train import NonFiniteGradientError, NonFiniteLossError, Trainer, evaluate_model

__version__ = "0.1.0"

__all__ = [
    # sparse activation
    "Routing", "Router", "LinearGate", "token_choice", "ROUTERS", "make_router", "register_router", "TopK",
    "NoisyTopK", "Switch", "GShardTop2", "ExpertChoice", "HashRouter", "TaskRouter", "ExpertBank", "GatedExpertBank",
    "MoE", "MoEStats", "SoftMoE", "losses",
    # SWAT and FLOPs
    "SwatLinear", "SwatConv2d", "SwatExpertBank", "swatify", "flops",
    # tasks and senses
    "tasks", "Task", "TaskBatch", "MultiTaskSampler", "senses", "Senses", "Tokens", "SENSES",
    # one model, many tasks
    "Config", "ModelConfig", "TrainConfig", "PRESETS", "preset", "tiny", "small", "dense_baseline",
    "PathwaysModel", "ModelOutput", "Trainer", "NonFiniteLossError",
    "NonFiniteGradientError", "CheckpointIntegrityError", "evaluate_model", "StepRecord", "BlockRecord",
    "SkippedRecord", "EvalRecord",
    # observation
    "observe", "Observation",
    # pathways
    "PathwayMap", "ExampleRouting", "pathway_map", "mutual_information", "top_pathway", "disable_experts",
    "extract_subnetwork", "route_example",
]
