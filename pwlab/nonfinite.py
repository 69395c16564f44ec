"""What a training step does about NaN/Inf, and what keeps its update whole.

Separate from :mod:`pwlab.train` so that the Trainer reads as the step itself: this module
holds the errors a non-finite step raises (:class:`NonFiniteLossError`, its subclass
:class:`NonFiniteGradientError`), the checks that find NaN/Inf (in a module output, in the
tasks' inputs, and after a failed forward which input, parameter or layer holds it), the
global gradient norm (where a NaN/Inf gradient shows) and clipping by it, and the deferred
Ctrl-C that lands an update and its record together. Nothing here changes a model; the
Trainer (:mod:`pwlab.train`) decides to raise or skip, and the one-process step strategy
(:mod:`pwlab.step_strategy`) takes the norm from here.
"""
from __future__ import annotations

import contextlib
import dataclasses
import signal
import threading

import torch

_HINT = ("nothing of this step was applied; lower the learning rate or set grad_clip, "
         "or pass TrainConfig(skip_nonfinite=True) to skip such steps")
_INPUT_HINT = ("nothing of this step was applied; remove the NaN/Inf values from the task's data, "
               "or pass TrainConfig(skip_nonfinite=True) to skip such steps")


class NonFiniteLossError(FloatingPointError):
    """Training met a NaN or Inf: the base of the trainer's non-finite errors.

    Attributes:
        step: the step that failed (1 for the first).
        task: the task, or the tasks of the step joined by ", ".
        tasks: the tasks, as a list.
        value: the non-finite value (a loss, or a gradient norm), NaN when there is none.
        what: what went non-finite, in words ("loss nan", "gradient (global norm inf)", ...).
        where: the parameter or layer found non-finite, or None.
        skipped: skipped steps in a row before this one (``skip_nonfinite=True``), else 0.
    """

    def __init__(self, step: int, task, value: float = float("nan"), *, what: str | None = None,
                 where: str | None = None, detail: str | None = None, skipped: int = 0):
        tasks = [task] if isinstance(task, str) else list(task)
        what = what if what is not None else f"loss {value}"
        place = f"in task {tasks[0]!r}" if len(tasks) == 1 else f"in tasks {', '.join(map(repr, tasks))}"
        msg = f"non-finite {what} at step {step} {place}"
        if detail:
            msg += f": {detail}"
        if skipped:
            msg += (f"; {skipped} steps in a row were skipped before it (max_consecutive_skips), "
                    "so training has diverged")
        super().__init__(f"{msg} ({_INPUT_HINT if what == 'input' else _HINT})")
        self.step, self.tasks, self.task, self.value = step, tasks, ", ".join(tasks), value
        self.what, self.where, self.skipped = what, where, skipped


class NonFiniteGradientError(NonFiniteLossError):
    """A gradient was NaN or Inf (checked before the optimizer step: it was not applied).

    ``where`` is the first parameter (in ``model.named_parameters()`` order) whose gradient is
    not finite; None when every gradient is finite but their global norm overflowed.
    """

    def __init__(self, step: int, tasks, norm: float, parameter: str | None, *, skipped: int = 0):
        detail = (f"first in parameter {parameter!r}" if parameter is not None
                  else "every gradient is finite, but their global norm overflowed")
        super().__init__(step, tasks, norm, what=f"gradient (global norm {norm})", where=parameter,
                         detail=detail, skipped=skipped)



def _nonfinite(obj) -> bool:
    """Whether a module output (tensor, tuple/list, dataclass of tensors) holds NaN/Inf."""
    if isinstance(obj, torch.Tensor):
        return obj.is_floating_point() and obj.numel() > 0 and not bool(torch.isfinite(obj.detach()).all())
    if isinstance(obj, (tuple, list)):
        return any(_nonfinite(o) for o in obj)
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return any(_nonfinite(getattr(obj, f.name)) for f in dataclasses.fields(obj))
    return False


def _nonfinite_inputs(batches) -> list[str]:
    """The tasks of ``batches`` whose training input holds NaN/Inf."""
    return [b.task for b in batches if isinstance(b.x, torch.Tensor) and _nonfinite(b.x)]


def _input_finding(tasks: list[str]) -> dict:
    """What :func:`_locate_nonfinite` reports for non-finite inputs of ``tasks``."""
    return {"tasks": tasks, "what": "input", "where": "input",
            "detail": f"the training input of task(s) {', '.join(map(repr, tasks))} holds NaN/Inf"}


def _total_norm(grads: list) -> torch.Tensor:
    """The global L2 norm of ``grads`` (as ``clip_grad_norm_`` computes it), without clipping."""
    if not grads:
        return torch.zeros(())
    if hasattr(torch.nn.utils, "get_total_norm"):          # torch >= 2.6
        return torch.nn.utils.get_total_norm(grads)
    return torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(g.detach()) for g in grads]))


def _clip(params: list, max_norm: float, total_norm: torch.Tensor) -> None:
    """Scale gradients to global norm at most ``max_norm`` (``total_norm`` is known finite)."""
    if hasattr(torch.nn.utils, "clip_grads_with_norm_"):   # torch >= 2.6
        torch.nn.utils.clip_grads_with_norm_(params, max_norm, total_norm)
    else:
        torch.nn.utils.clip_grad_norm_(params, max_norm)


def _locate_nonfinite(model: torch.nn.Module, generator: torch.Generator,
                      batches) -> dict | None:
    """After a failed or non-finite forward: which input, parameter or layer holds NaN/Inf.

    ``model`` is the trainer's model, ``generator`` its routing generator (a copy is drawn
    from; the generator itself is not advanced). Returns None when nothing non-finite is found. Runs only on the failure path; it
    draws from a copy of the routing generator and the dropout stream is put back by
    the caller, so the step can be redone unchanged.
    """
    bad_inputs = _nonfinite_inputs(batches)
    if bad_inputs:
        return _input_finding(bad_inputs)
    param = next((n for n, p in model.named_parameters() if _nonfinite(p)), None)
    # rerun each task alone, recording the first layer whose output is not finite
    failing, layer = [], None
    first: list[str] = []

    def hook(name):
        def record(module, args, output):
            if not first and _nonfinite(output):
                first.append(name)
        return record

    handles = [m.register_forward_hook(hook(n)) for n, m in model.named_modules() if n]
    gen = torch.Generator(device=generator.device)
    gen.set_state(generator.get_state())
    try:
        with torch.no_grad():
            for b in batches:
                first.clear()
                try:
                    o = model([b], generator=gen)
                    bad = not all(bool(torch.isfinite(v)) for v in o.losses.values())
                except (ValueError, RuntimeError, FloatingPointError):
                    bad = True
                if bad:
                    failing.append(b.task)
                    layer = layer or (first[0] if first else None)
    finally:
        for h in handles:
            h.remove()
    if param is not None:
        return {"tasks": failing, "what": "forward pass", "where": param,
                "detail": f"parameter {param!r} holds NaN/Inf (the model diverged in an earlier step)"
                          + (f"; first non-finite output in layer {layer!r}" if layer else "")}
    if layer is not None:
        return {"tasks": failing, "what": "forward pass", "where": layer,
                "detail": f"the output of layer {layer!r} overflowed to NaN/Inf (the weights and inputs "
                          "are finite)"}
    return None


@contextlib.contextmanager
def _interrupts_deferred():
    """Hold Ctrl-C until the block ends, so an update is applied whole or not at all."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    caught = []
    previous = signal.signal(signal.SIGINT, lambda *a: caught.append(a))
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)
        if caught:
            raise KeyboardInterrupt
