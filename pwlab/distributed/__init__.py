"""Beyond one machine: expert parallelism over ``torch.distributed`` all-to-all.

- :class:`ExpertParallelMoE` — the MoE layer with experts sharded over the ranks.
- :func:`all_to_all`, :func:`count_a2a_bytes` — the differentiable exchange, measured.
- :func:`a2a_volume`, :func:`a2a_bytes` — the cost model of that exchange.
- :func:`expert_parallel`, :func:`sync_gradients`, :func:`clip_grad_norm_`, :func:`shard_batches` —
  a whole model: experts sharded, the rest data parallel (the trainer:
  :class:`pwlab.distributed.trainer.DistributedTrainer`, the Trainer with an
  ``ExpertParallelStrategy``, checkpoints included; the command: ``pwlab.distributed.train``).
- :func:`run_local` — P local gloo processes (tests, benchmarks, notebooks).
"""
from pwlab.distributed.cost import a2a_bytes, a2a_volume
from pwlab.distributed.ep_moe import ExpertParallelMoE, ExpertParallelStats, gather_routing
from pwlab.distributed.exchange import A2ATraffic, all_to_all, count_a2a_bytes, exchange_counts
from pwlab.distributed.launch import DistributedRunError, run_local
from pwlab.distributed.parallel import (clip_grad_norm_, expert_parallel, expert_parameters, replicated_parameters,
                                        shard_batches, sync_gradients)

__all__ = ["ExpertParallelMoE", "ExpertParallelStats", "gather_routing",
           "all_to_all", "exchange_counts", "count_a2a_bytes", "A2ATraffic",
           "a2a_volume", "a2a_bytes",
           "expert_parallel", "expert_parameters", "replicated_parameters", "sync_gradients", "clip_grad_norm_",
           "shard_batches",
           "run_local", "DistributedRunError"]
