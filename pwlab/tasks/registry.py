"""The task registry: names -> builders, and the data card (:func:`describe`)."""
from __future__ import annotations

import inspect
from collections.abc import Callable, Iterable

from pwlab.tasks import audio, image, synthetic, tabular, text
from pwlab.tasks.base import Task

#: name -> builder(seed, **kw) -> Task, in the order the data card lists them
BUILDERS: dict[str, Callable[..., Task]] = {
    "digits": image.digits,
    "digit_parity": image.digit_parity,
    "dtmf": audio.dtmf,
    "digit_words": text.digit_words,
    "arithmetic": text.arithmetic,
    "wine": tabular.wine,
    "breast_cancer": tabular.breast_cancer,
    "mmoe_a": synthetic.mmoe_a,
    "mmoe_b": synthetic.mmoe_b,
}


def names() -> list[str]:
    """All registered task names."""
    return list(BUILDERS)


def _resolve(names_) -> list[str]:
    if isinstance(names_, str):
        names_ = list(BUILDERS) if names_ == "all" else [names_]
    elif not isinstance(names_, Iterable):
        raise ValueError(f"names must be 'all', a task name or a list of task names, got {names_!r}")
    out = list(names_)
    if not out:
        raise ValueError(f"names must list at least one task; known tasks: {', '.join(BUILDERS)}")
    for n in out:
        if n not in BUILDERS:
            raise ValueError(f"unknown task {n!r}; known tasks: {', '.join(BUILDERS)}")
    return out


#: the largest data seed: the builders derive each task's generator seed from it
#: (``seed · 1_000_003 + salt``, see ``_split.generator``), which must fit in 64 bits
MAX_SEED = 2**32 - 1


def _check_seed(seed) -> int:
    if isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed <= MAX_SEED:
        raise ValueError(f"seed must be an integer in [0, 2**32 - 1 = {MAX_SEED}], got {seed!r}")
    return seed


def _options(builder: Callable) -> set[str]:
    return {k for k, v in inspect.signature(builder).parameters.items() if v.kind is v.KEYWORD_ONLY}


def get(name: str, seed: int = 0, **kw) -> Task:
    """Build one task.

    Args:
        name: one of :func:`names`.
        seed: the data seed, an integer in ``[0, MAX_SEED]`` (same seed -> identical tensors).
        **kw: the builder's options (e.g. ``p=0.9`` for the MMoE pair).
    """
    (name,) = _resolve([name])
    _check_seed(seed)
    extra = set(kw) - _options(BUILDERS[name])
    if extra:
        raise ValueError(f"task {name!r} takes options {sorted(_options(BUILDERS[name]))}, got unknown {sorted(extra)}")
    return BUILDERS[name](seed, **kw)


def load(names="all", seed: int = 0, **kw) -> list[Task]:
    """Build several tasks; each option in ``kw`` goes to the tasks whose builder takes it.

    Args:
        names: ``"all"`` or a list of task names (not empty).
    Returns:
        the tasks, in the order given.
    """
    chosen = _resolve(names)
    _check_seed(seed)
    unused = set(kw) - set().union(*(_options(BUILDERS[n]) for n in chosen))
    if unused:
        raise ValueError(f"options {sorted(unused)} are taken by none of the tasks {chosen}")
    return [BUILDERS[n](seed, **{k: v for k, v in kw.items() if k in _options(BUILDERS[n])}) for n in chosen]


def chance(task: Task) -> float:
    """The score of a constant guess on the test split.

    Classification: accuracy of always predicting the test split's most frequent class.
    Regression: MSE of always predicting the test mean, i.e. the (biased) variance of y_test.
    """
    if task.kind == "classification":
        counts = task.y_test.bincount(minlength=task.num_classes)
        return float(counts.max()) / len(task.y_test)
    return float(task.y_test.var(unbiased=False))


def describe(names="all", seed: int = 0, **kw) -> list[dict]:
    """One record per task for the data card: name, sense, kind, classes, n_train, n_test, chance, metric."""
    return [{"name": t.name, "sense": t.sense, "kind": t.kind, "classes": t.num_classes,
             "n_train": len(t.y_train), "n_test": len(t.y_test), "chance": round(chance(t), 4),
             "metric": t.metric, "description": t.description}
            for t in load(names, seed, **kw)]
