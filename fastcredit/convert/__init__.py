"""``convert(model, method, **options)``: switch an existing model's credit assignment in one line.

The model is changed in place and returned; its report is the returned model's
``conversion_report`` attribute (a :class:`ConversionReport`). Nothing is printed.

* ``"fa"``, ``"usf"``, ``"frsf"``, ``"brsf"``, ``"kp"``, ``"bp"``: every ``nn.Linear``,
  ``nn.Conv1d``, ``nn.Conv2d`` and ``nn.Conv3d`` (exactly those types; subclasses such as
  the one inside ``nn.MultiheadAttention`` are used functionally by their owner) becomes the
  :mod:`fastcredit.nn` layer with the same hyperparameters, holding the *same* Parameter
  objects, so an optimizer built before the conversion still updates them. A layer carrying
  hooks (e.g. the old ``weight_norm``) is not replaced, as the hooks would be lost: it is
  listed as unsupported.
* ``"dfa"``: weight layers stay torch layers; a :class:`~fastcredit.nn.DFAPoint` is attached
  after every hidden block and a :class:`~fastcredit.nn.DFAOutput` to the output layer (both
  through forward hooks, as children of the module they follow, so no state-dict key moves).
  A *block boundary* is found from the module tree, in registration order:

  - an activation module that is a direct child of the root or of a container
    (``nn.Sequential``, ``nn.ModuleList``, ``nn.ModuleDict``, searched recursively);
  - a child of those that is neither a container nor an activation and holds weight layers
    (a residual block, a custom stage): its *output* is the boundary, so for a ResNet each
    residual block (after its skip addition and final activation) is one DFA block, and the
    layers inside it, the shortcut included, are trained by ordinary autograd from the
    feedback its point receives. Cutting inside a residual block would send feedback to its
    first half while its skip path still carried the gradient, mixing two rules.

  Boundaries with no weight layer after them are ignored. The output block (everything after
  the last boundary) must hold exactly one Linear/Conv layer, the head, whose output the
  :class:`~fastcredit.nn.DFAOutput` follows; ``num_outputs`` defaults to the head's
  ``out_features``. A boundary module called twice in one forward raises at that call.
* ``"lra"``: every ``nn.Linear`` and ``nn.Conv1d/2d/3d`` becomes an LRA block holding the
  same W and b (E is drawn as the blocks draw it); the last Linear (in module order) must
  produce the logits of a softmax cross-entropy loss and becomes an
  :class:`~fastcredit.nn.LRAOutput`. A flat ``nn.Sequential`` of weight layers, activation
  modules (Tanh, Sigmoid, ReLU, ReLU6, LeakyReLU, GELU, Softplus with default arguments,
  Identity), pooling, Flatten and Dropout folds an activation that directly follows a weight
  layer into its block (:class:`~fastcredit.nn.LRALinear` / ``LRAConv*d`` with that
  activation; its slot becomes ``nn.Identity``, keeping every index). Any other model (a
  ResNet, a custom forward) has its layers replaced in place by blocks with the identity
  activation: activations, pooling, normalisation and residual additions keep their ordinary
  backward, which carries LRA's displacement between blocks (so an add sends it to both
  branches and a fork sums what comes back); modules with other parameters (BatchNorm) are
  listed as unsupported: they are trained on the displacement through their ordinary backward.
  Convolutions need numeric padding with zeros; ``refine_steps``/``clip_direction`` apply to
  linear blocks only.

``copy=True`` converts a deep copy and returns it, leaving ``model`` untouched.
"""

from __future__ import annotations

import copy as copy_module

from torch import nn

from .._spec import FEEDBACK_METHODS, METHODS, check_choice
from . import dfa, fa, lra
from ._common import ConversionReport, Entry

_OPTIONS = {**{m: fa.OPTIONS for m in FEEDBACK_METHODS}, "dfa": dfa.OPTIONS, "lra": lra.OPTIONS}

__all__ = ["ConversionReport", "Entry", "convert"]


def convert(model: nn.Module, method: str, *, copy: bool = False, **options) -> nn.Module:
    """Switch ``model`` to ``method``'s credit assignment; returns the model (the new root when
    the root itself is replaced, e.g. a bare ``nn.Linear``) with its report attached as
    ``conversion_report``. See the module docstring for what each method does.

    Options by method: fa/usf/frsf/brsf/kp/bp take the layers' ``feedback``, ``seed``,
    ``feedback_scale``, ``feedback_dist`` (with ``seed``, layer i gets a seed derived from
    (seed, i); without, each layer draws its own from torch's generator). dfa takes
    :class:`~fastcredit.nn.DFAOutput`'s ``num_outputs``, ``feedback``, ``normalization``,
    ``dist``, ``scale``, ``signal`` ("error" or "sign"), ``batch_dims``, ``seed`` and the
    points' ``spatial``. lra takes ``beta``, ``gamma``, ``error``, ``use_fprime``,
    ``surrogate``, ``refine_steps``, ``clip_direction``, ``clip_update``, ``feedback_std`` and the output's
    ``loss_reduction``.
    """
    check_choice("method", method, METHODS)
    unknown = sorted(set(options) - set(_OPTIONS[method]))
    if unknown:
        raise ValueError(f"unknown option(s) {unknown} for method {method!r}; expected some of "
                         f"{_OPTIONS[method]}")
    if not isinstance(model, nn.Module):
        raise TypeError(f"convert expects an nn.Module, got {type(model).__name__}")
    if copy:
        model = copy_module.deepcopy(model)
    report = ConversionReport(method)
    if method == "dfa":
        dfa.convert_dfa(model, report, options)
    elif method == "lra":
        lra.convert_lra(model, report, options)
    else:
        model = fa.convert_feedback_layers(model, method, report, options)
    model.conversion_report = report
    return model
