"""The offline task suite: a registry of seeded tasks over four senses, and multi-task sampling.

Nothing is downloaded: image and tabular tasks use scikit-learn's bundled data, audio and
the MMoE pair are synthesized, text is generated from word lists.

    >>> import pwlab.tasks as tasks
    >>> tasks.names()                    # ['digits', 'digit_parity', 'dtmf', ...]
    >>> t = tasks.get("wine", seed=0)    # a Task
    >>> tasks.describe()                 # the data card, one dict per task
"""
from pwlab.tasks import text
from pwlab.tasks.base import KINDS, METRICS, SENSES, Task, TaskBatch
from pwlab.tasks.registry import BUILDERS, chance, describe, get, load, names
from pwlab.tasks.sampler import STRATEGIES, MultiTaskSampler, batches, mixing_probabilities

__all__ = [
    "Task", "TaskBatch", "SENSES", "KINDS", "METRICS", "BUILDERS", "names", "get", "load", "describe", "chance",
    "MultiTaskSampler", "batches", "mixing_probabilities", "STRATEGIES", "text",
]
