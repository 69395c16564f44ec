"""Multi-task sampling: which task each example of a training step comes from.

A step mixes tasks of different senses. The sampler draws, for each of the ``batch_size``
example slots, the task it comes from (from :attr:`MultiTaskSampler.probabilities`), and
returns one :class:`TaskBatch` per task present. The model then encodes each task's part
with that task's sense encoder, pads all parts to a common token length with a mask, and
runs the trunk once over all of them — so tokens of every task compete in the same routers
and the same expert capacity, as in one Pathways step (rather than alternating single-task
steps, where a router never sees two tasks at once).

Mixing strategies (examples-proportional and temperature-scaled mixing as in T5, Raffel
et al. 2020 sec. 3.5.2, and multilingual NMT, Arivazhagan et al. 2019), for tasks of very
different sizes:
    proportional   p_i ∝ n_i            (n_i = training examples of task i)
    uniform        p_i = 1 / K
    temperature    p_i ∝ n_i^(1/T)      (T = 1 is proportional; T -> inf is uniform)

Within a task, examples are drawn without replacement through a seeded permutation per
epoch (a new permutation once a task's epoch is used up), so every training example is
seen once per epoch of that task. All randomness comes from one ``torch.Generator``.
"""
from __future__ import annotations

from collections.abc import Iterator, Sequence

import torch

from pwlab._checks import one_of, positive_float, positive_int
from pwlab.tasks.base import Task, TaskBatch

STRATEGIES = ("proportional", "uniform", "temperature")


def mixing_probabilities(sizes: Sequence[int], strategy: str = "proportional", temperature: float = 2.0) -> torch.Tensor:
    """Per-task sampling probabilities (K,) float64 for training-set sizes ``sizes``."""
    one_of("strategy", strategy, STRATEGIES)
    n = torch.tensor(sizes, dtype=torch.float64)
    if strategy == "uniform":
        w = torch.ones_like(n)
    elif strategy == "proportional":
        w = n
    else:
        w = n ** (1.0 / positive_float("temperature", temperature))
    return w / w.sum()


class MultiTaskSampler:
    """Draws mixed multi-task training steps; see the module docstring for the choices.

    Args:
        tasks: the tasks (not empty); ``TaskBatch.task_index`` indexes this list.
        batch_size: examples per step, summed over tasks.
        strategy: ``"proportional"``, ``"uniform"`` or ``"temperature"``.
        temperature: T of temperature sampling (ignored otherwise).
        seed: the stream's seed; the same seed gives the same steps.

    Attributes:
        probabilities: (K,) float64, the chance that an example slot goes to each task.
    """

    def __init__(self, tasks: Sequence[Task], batch_size: int = 64, strategy: str = "proportional",
                 temperature: float = 2.0, seed: int = 0):
        self.tasks = list(tasks)
        if not self.tasks:
            raise ValueError("tasks must hold at least one Task, got an empty list")
        if not all(isinstance(t, Task) for t in self.tasks):
            raise ValueError("tasks must be a list of pwlab.tasks.Task")
        self.batch_size = positive_int("batch_size", batch_size)
        self.strategy = one_of("strategy", strategy, STRATEGIES)
        self.temperature = positive_float("temperature", temperature)
        self.seed = positive_int("seed", seed, minimum=0)
        self.probabilities = mixing_probabilities([len(t.y_train) for t in self.tasks], strategy, temperature)
        self._gen = torch.Generator().manual_seed(seed)
        self._perm = [torch.randperm(len(t.y_train), generator=self._gen) for t in self.tasks]
        self._pos = [0] * len(self.tasks)
        self._epoch = [0] * len(self.tasks)
        self.steps = 0

    def _take(self, k: int, count: int) -> torch.Tensor:
        # the next `count` indices of task k's epoch permutation, starting a new epoch when it runs out
        out = []
        while count > 0:
            if self._pos[k] == len(self._perm[k]):
                self._perm[k] = torch.randperm(len(self._perm[k]), generator=self._gen)
                self._pos[k] = 0
                self._epoch[k] += 1
            n = min(count, len(self._perm[k]) - self._pos[k])
            out.append(self._perm[k][self._pos[k]:self._pos[k] + n])
            self._pos[k] += n
            count -= n
        return torch.cat(out)

    def sample(self) -> list[TaskBatch]:
        """One step: a TaskBatch per task drawn at least once, in task order (sizes sum to batch_size)."""
        slots = torch.multinomial(self.probabilities, self.batch_size, replacement=True, generator=self._gen)
        counts = torch.bincount(slots, minlength=len(self.tasks)).tolist()
        out = []
        for k, (task, count) in enumerate(zip(self.tasks, counts)):
            if count:
                idx = self._take(k, count)
                out.append(TaskBatch(task=task.name, task_index=k, sense=task.sense,
                                     x=task.x_train[idx], y=task.y_train[idx]))
        self.steps += 1
        return out

    def __iter__(self) -> Iterator[list[TaskBatch]]:
        while True:
            yield self.sample()

    @property
    def epochs(self) -> list[float]:
        """Epochs completed per task (fractional)."""
        return [e + p / len(perm) for e, p, perm in zip(self._epoch, self._pos, self._perm)]

    def state_dict(self) -> dict:
        """Plain tensors, ints and lists only (loadable with ``torch.load(weights_only=True)``)."""
        return {"generator": self._gen.get_state(), "perm": [p.clone() for p in self._perm],
                "pos": list(self._pos), "epoch": list(self._epoch), "steps": self.steps,
                "names": [t.name for t in self.tasks]}

    def load_state_dict(self, state: dict) -> None:
        """Resume the stream where :meth:`state_dict` left it (same tasks, same order).

        Every entry is checked before anything changes: a state that does not fit (other
        tasks, a position outside a task's epoch, a permutation of other size or with
        repeats, values of the wrong type) raises ``ValueError`` naming the entry and task,
        and leaves the sampler as it was.
        """
        if not isinstance(state, dict):
            raise ValueError(f"state must be a dict from MultiTaskSampler.state_dict(), got {type(state).__name__}")
        missing = [k for k in ("generator", "perm", "pos", "epoch", "steps", "names") if k not in state]
        if missing:
            raise ValueError(f"sampler state is missing {missing}")
        names = [t.name for t in self.tasks]
        if not isinstance(state["names"], (list, tuple)) or list(state["names"]) != names:
            raise ValueError(f"state holds tasks {state['names']}, this sampler has {names}")
        sizes = [len(t.y_train) for t in self.tasks]
        for key in ("perm", "pos", "epoch"):
            if not isinstance(state[key], (list, tuple)) or len(state[key]) != len(names):
                raise ValueError(f"sampler state['{key}'] must be a list of {len(names)} entries (one per task), "
                                 f"got {state[key]!r:.80}")
        perms = []
        for k, (name, n, p) in enumerate(zip(names, sizes, state["perm"])):
            if not isinstance(p, torch.Tensor) or p.dim() != 1 or p.dtype != torch.int64 or len(p) != n:
                raise ValueError(f"sampler state['perm'][{k}] (task {name!r}) must be a 1-D int64 tensor of the "
                                 f"task's {n} training indices, got "
                                 f"{tuple(p.shape) if isinstance(p, torch.Tensor) else type(p).__name__}")
            if not torch.equal(torch.sort(p).values, torch.arange(n)):
                raise ValueError(f"sampler state['perm'][{k}] (task {name!r}) is not a permutation of 0..{n - 1}")
            perms.append(p.clone())
        pos = [_state_int(f"sampler state['pos'][{k}] (task {name!r})", v, 0, n)
               for k, (name, n, v) in enumerate(zip(names, sizes, state["pos"]))]
        epoch = [_state_int(f"sampler state['epoch'][{k}] (task {name!r})", v, 0, None)
                 for k, (name, v) in enumerate(zip(names, state["epoch"]))]
        steps = _state_int("sampler state['steps']", state["steps"], 0, None)
        gen = state["generator"]
        if not isinstance(gen, torch.Tensor) or gen.dtype != torch.uint8:
            raise ValueError("sampler state['generator'] must be a uint8 tensor from torch.Generator.get_state()")
        try:
            torch.Generator().set_state(gen)
        except RuntimeError as e:
            raise ValueError(f"sampler state['generator'] is not a CPU generator state: {str(e).splitlines()[0]}") \
                from None
        # all checked: commit
        self._gen.set_state(gen)
        self._perm, self._pos, self._epoch, self.steps = perms, pos, epoch, steps


def _state_int(name: str, value, low: int, high: int | None) -> int:
    # a tensor scalar or a plain int; bools and floats are not positions
    if isinstance(value, torch.Tensor) and value.dim() == 0 and not value.is_floating_point() \
            and value.dtype != torch.bool:
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int) or value < low or (high is not None and value > high):
        bound = f"in [{low}, {high}]" if high is not None else f">= {low}"
        raise ValueError(f"{name} must be an integer {bound}, got {value!r}")
    return value


def batches(task: Task, split: str = "test", batch_size: int = 256, task_index: int = 0) -> Iterator[TaskBatch]:
    """Iterate one split of a task in order, in batches (for evaluation).

    Yields:
        TaskBatch with x (b, ...) and y (b,), b <= batch_size; the last batch may be short.
    """
    one_of("split", split, ("train", "test"))
    positive_int("batch_size", batch_size)
    x, y = (task.x_train, task.y_train) if split == "train" else (task.x_test, task.y_test)
    for i in range(0, len(y), batch_size):
        yield TaskBatch(task=task.name, task_index=task_index, sense=task.sense,
                        x=x[i:i + batch_size], y=y[i:i + batch_size])
