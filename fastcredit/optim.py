"""Optimizer-side pieces of the FA family: Batch Manhattan updates, Kolen-Pollack feedback
learning and the forward-weight norm constraint.

Both wrappers subclass :class:`torch.optim.Optimizer` and share the wrapped optimizer's
``param_groups`` and ``state``, so LR schedulers, ``zero_grad`` and nesting work; wrap KP first
and Batch Manhattan around it (``BatchManhattan(KolenPollack(opt, model))``) or the other way
round: either way B receives the same (signed) gradient as W.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable

import torch

from .nn import FeedbackLayer


class _OptimizerWrapper(torch.optim.Optimizer):
    """Delegates to ``optimizer``. Optimizer.__init__ is deliberately not run: the wrapper owns
    no parameters or state of its own, it exposes the wrapped optimizer's."""

    def __init__(self, optimizer: torch.optim.Optimizer) -> None:  # noqa: D107
        if not isinstance(optimizer, torch.optim.Optimizer):
            raise TypeError(f"{type(self).__name__} wraps a torch.optim.Optimizer, "
                            f"got {type(optimizer).__name__}")
        self.optimizer = optimizer

    @property
    def param_groups(self) -> list[dict]:
        return self.optimizer.param_groups

    @property
    def state(self):
        return self.optimizer.state

    @property
    def defaults(self) -> dict:
        return self.optimizer.defaults

    def zero_grad(self, set_to_none: bool = True) -> None:
        self.optimizer.zero_grad(set_to_none)

    def add_param_group(self, param_group: dict) -> None:
        self.optimizer.add_param_group(param_group)

    def register_step_pre_hook(self, hook: Callable):
        return self.optimizer.register_step_pre_hook(hook)

    def register_step_post_hook(self, hook: Callable):
        return self.optimizer.register_step_post_hook(hook)

    def state_dict(self) -> dict:
        return self.optimizer.state_dict()

    def load_state_dict(self, state_dict: dict) -> None:
        self.optimizer.load_state_dict(state_dict)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.optimizer!r})"

    # Plain attribute state for copy/pickle: Optimizer's own versions re-run its __init__ hooks.
    def __getstate__(self) -> dict:
        return self.__dict__

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)

    def _evaluate(self, closure: Callable[[], torch.Tensor] | None) -> torch.Tensor | None:
        if closure is None:
            return None
        with torch.enable_grad():
            return closure()


class BatchManhattan(_OptimizerWrapper):
    """Batch Manhattan (Liao et al. 2016): each gradient is replaced by its sign, in place,
    before the wrapped optimizer steps, so its weight decay, momentum and learning rate act on
    ``sign(∇W)``. sign(0) = 0. A closure, if given, is evaluated once before the signs are taken.
    """

    def step(self, closure: Callable[[], torch.Tensor] | None = None) -> torch.Tensor | None:
        loss = self._evaluate(closure)
        with torch.no_grad():
            for group in self.param_groups:
                for p in group["params"]:
                    if p.grad is not None:
                        p.grad.sign_()
        self.optimizer.step()
        return loss


class KolenPollack(_OptimizerWrapper):
    """Kolen-Pollack feedback learning (Akrout et al. 2019) for the ``method="kp"`` layers of
    ``model``: B gets exactly the update W gets.

    KP's rule is ``W ← W − η(∇W + λW)``, ``B ← B − η(∇W + λB)``: the same gradient, each its own
    decay, so W − B shrinks by (1 − ηλ) per step. Here a second instance of the wrapped
    optimizer's class (same hyperparameters, kept in sync with each W's param group every step,
    so LR schedules apply) steps the B buffers with ``B.grad = W.grad``. Weight decay, momentum
    and adaptive state then act on B as on W; with B = W at the start, B stays bit-identical to
    W. B stays a buffer: it is never in ``model.parameters()``.

    Create it after moving the model to its device and dtype (moving replaces buffers).
    ``state_dict()`` holds both optimizers' states.
    """

    def __init__(self, optimizer: torch.optim.Optimizer, model: torch.nn.Module) -> None:
        super().__init__(optimizer)
        self._layers = [m for m in model.modules()
                        if isinstance(m, FeedbackLayer) and m.method == "kp"]
        if not self._layers:
            raise ValueError("KolenPollack: the model has no layer with method='kp'")
        group_of = {id(p): i for i, g in enumerate(optimizer.param_groups) for p in g["params"]}
        missing = [type(m).__name__ for m in self._layers if id(m.weight) not in group_of]
        if missing:
            raise ValueError(
                f"KolenPollack: the optimizer does not update the weight of {len(missing)} kp "
                f"layer(s) ({', '.join(missing)}); B can only follow W's updates"
            )
        self._source_groups = sorted({group_of[id(m.weight)] for m in self._layers})
        # layers ordered as their B appear in the second optimizer's param groups
        self._layers = [m for g in self._source_groups for m in self._layers
                        if group_of[id(m.weight)] == g]
        self._feedback_params = [m.feedback_weight for m in self._layers]
        groups = [{"params": [m.feedback_weight for m in self._layers
                              if group_of[id(m.weight)] == g]} for g in self._source_groups]
        base = optimizer  # the torch optimizer inside any fastcredit wrappers
        while isinstance(base, _OptimizerWrapper):
            base = base.optimizer
        if isinstance(base, torch.optim.LBFGS):
            raise TypeError("KolenPollack: LBFGS re-evaluates the loss in its step; B cannot "
                            "take W's update from it")
        # `defaults` may hold entries its constructor does not take (AdamW's
        # decoupled_weight_decay): pass those it accepts, the sync sets every group's rest.
        accepted = inspect.signature(type(base)).parameters
        kwargs = {k: v for k, v in base.defaults.items() if k in accepted and k != "params"}
        self.feedback_optimizer = type(base)(groups, **kwargs)
        self._sync_hyperparameters()

    def _sync_hyperparameters(self) -> None:
        for twin, index in zip(self.feedback_optimizer.param_groups, self._source_groups):
            source = self.optimizer.param_groups[index]
            twin.update({k: v for k, v in source.items() if k != "params"})

    def step(self, closure: Callable[[], torch.Tensor] | None = None) -> torch.Tensor | None:
        loss = self.optimizer.step(closure) if closure is not None else self.optimizer.step()
        self._sync_hyperparameters()
        # W.grad is read after W's step so that a closure's or an inner BatchManhattan's
        # gradient is the one B receives (torch optimizers never modify .grad).
        for layer, b in zip(self._layers, self._feedback_params):
            if layer.feedback_weight is not b:
                raise RuntimeError(
                    "KolenPollack: a kp layer's feedback_weight buffer was replaced (model moved "
                    "to another device or dtype?); create the optimizer after moving the model"
                )
            grad = layer.weight.grad
            b.grad = None if grad is None else grad.detach().clone()
        self.feedback_optimizer.step()
        for b in self._feedback_params:
            b.grad = None
        return loss

    def state_dict(self) -> dict:
        return {"optimizer": self.optimizer.state_dict(),
                "feedback_optimizer": self.feedback_optimizer.state_dict()}

    def load_state_dict(self, state_dict: dict) -> None:
        self.optimizer.load_state_dict(state_dict["optimizer"])
        self.feedback_optimizer.load_state_dict(state_dict["feedback_optimizer"])


@torch.no_grad()
def constrain_weight_norm(model: torch.nn.Module) -> None:
    """Rescale, in place, the weight of every fastcredit layer of ``model`` to the Frobenius
    norm it had at initialisation (``weight_norm_init``), the norm constraint of Moskovitz et
    al. 2018. Call it after each optimizer step, e.g. through
    ``optimizer.register_step_post_hook(lambda *_: constrain_weight_norm(model))``. The
    Parameter objects are kept; an all-zero weight is left as it is."""
    layers = [m for m in model.modules() if isinstance(m, FeedbackLayer)]
    if not layers:
        raise ValueError("constrain_weight_norm: the model has no fastcredit layer")
    for layer in layers:
        norm = torch.linalg.vector_norm(layer.weight)
        ratio = torch.where(norm > 0, layer.weight_norm_init / norm, torch.ones_like(norm))
        layer.weight.mul_(ratio)
