"""``convert(model, method, **options)``: switch an existing model's credit assignment in one line.

The model is changed in place and returned; its report is the returned model's
``conversion_report`` attribute (a :class:`ConversionReport`). Nothing is printed.

* ``"fa"``, ``"usf"``, ``"frsf"``, ``"brsf"``, ``"kp"``, ``"bp"``: every ``nn.Linear``,
  ``nn.Conv1d``, ``nn.Conv2d`` and ``nn.Conv3d`` (exactly those types; subclasses such as
  the one inside ``nn.MultiheadAttention`` are used functionally by their owner) becomes the
  :mod:`fastcredit.nn` layer with the same hyperparameters, holding the *same* Parameter
  objects, so an optimizer built before the conversion still updates them. A layer carrying
  hooks (e.g. the old ``weight_norm``) is not replaced, as the hooks would be lost: it is
  listed as unsupported. A module whose own Parameters are all learnt tokens or position
  embeddings (named ``cls_token``, ``mask_token``, ``dist_token``, ``reg_token``,
  ``register_tokens``, ``position_embeddings`` or ``pos_embed``, shaped ``[1, ...]``: ViT's
  embeddings) is kept and counted as embeddings: added to or concatenated with the sequence,
  they pass the error on without a weight product; its weight layers are converted.
* ``"dfa"``: weight layers stay torch layers; a :class:`~fastcredit.nn.DFAPoint` is attached
  after every hidden block and a :class:`~fastcredit.nn.DFAOutput` to the output layer (both
  through forward hooks, as children of the module they follow, so no state-dict key moves).
  A *block boundary* is found from the module tree, in registration order, among the
  children of the root, of containers (``nn.Sequential``, ``nn.ModuleList``,
  ``nn.ModuleDict``) and of any module holding a *stack* (a ModuleList or Sequential of two
  or more modules of one class holding weights: ``TransformerEncoder.layers``, GPT-2's
  ``transformer.h``, BERT's ``encoder.layer``, a ResNet stage), searched recursively; a
  stack's members are not opened:

  - an activation module;
  - an RNN (``nn.RNN``/``LSTM``/``GRU``): its output sequence gets the point, with
    per-time-step feedback;
  - a child of those that is neither a container nor an activation and holds weight layers
    (a residual block, a custom stage): its *output* is the boundary, so for a ResNet each
    residual block (after its skip addition and final activation) is one DFA block, and the
    layers inside it, the shortcut included, are trained by ordinary autograd from the
    feedback its point receives. Cutting inside a residual block would send feedback to its
    first half while its skip path still carried the gradient, mixing two rules.

  Where the point goes (``placement``):

  - ``"before_weights"`` (default): after the last module before the next weight layer (or
    block), so the pooling, dropout, normalisation and activations in between belong to the
    block and carry its feedback back by autograd (any other module without weights stops it:
    registration order need not be the data path, as for a Llama's rotary embedding):
    conv → tanh → maxpool → conv gets its point after the maxpool, as Nøkland 2016's,
    Launay 2019's and TinyDFA's code deliver it (B_l then spans the pooled map). A trailing
    ``nn.Flatten``/``nn.Unflatten``/``nn.Identity`` is not crossed: it changes no value, so
    the dense feedback is the same before or after it, and before it the point keeps the
    map's shape for ``spatial="shared"``. A residual block followed by a pool and the head
    gets its point after the pool.
  - ``"after_activation"``: on the boundary itself (the activation's or the block's
    output), before any pooling: another DFA variant (B_l over the unpooled map).

  ``sublayers=True`` (TinyDFA's finer placement) adds a point after the attention sublayer
  of every stack member (its first child that is an ``nn.MultiheadAttention`` or whose class
  name ends in "Attention"), so each transformer block gets one after attention and one after
  its MLP. A boundary returning a tuple, list or dataclass (a transformers ``ModelOutput``)
  gets the point on its first entry (the hidden state); the other tensors pass through
  detached, so the block is trained by its point's feedback alone. Weight layers here also
  include ConvTranspose, transformers' ``Conv1D``, ``nn.MultiheadAttention`` and RNNs.

  Token dims: with a Linear head and no ``batch_dims`` given, every dim of the head's output
  but the last indexes rows (causal-LM logits ``[N, T, V]``: ``(0, 1)``), and so does every
  dim but the last of a point whose block has no convolution (``[N, T, D]`` hidden states,
  ordered so that the output's rows come first: a sequence-first ``[T, N, D]`` under a
  pooled ``[N, C]`` gets ``(1, 0)``); under a pooled output each example's feedback row is
  spread over its tokens, divided by sqrt(T). Conv points keep the output's dims (dense
  feedback over the map). Boundaries with no weight layer after them are ignored. The
  output block (everything after the last boundary) must hold exactly one Linear/Conv
  layer, the head, whose output the :class:`~fastcredit.nn.DFAOutput` follows;
  ``num_outputs`` defaults to the head's ``out_features``. ``error_at="head_input"`` (a
  Linear head, ``signal="error"``) puts the ``DFAOutput`` on the head's input instead, as
  Launay et al. 2020's language-model code does (before the vocabulary projection): the
  error projected is then the true gradient at the head's input, ``e W`` ``[rows,
  in_features]``, so the projections cost ``in_features`` rather than the vocabulary per
  row. A boundary module called several times in one forward gets feedback at every call;
  each call of the converted model starts a new forward. Where a block after a point starts
  with a ``LayerNorm``/``RMSNorm`` feeding a Linear or ``Conv1D`` (pre-norm transformers:
  GPT-2's ``ln_1`` -> ``c_attn``), the norm's affine is folded into that layer's backward
  (:mod:`fastcredit.convert.fold`): the same gradients, without the layer's input gradient,
  which only the norm's weight and bias needed (not under autocast or torch.compile).
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

``copy=True`` converts a deep copy and returns it, leaving ``model`` untouched. A model that
already holds another rule (a layer of another method, DFA points, LRA blocks) is refused
with a ValueError: :func:`unconvert` it first. FA-family layers of the requested method are
kept, so a partly converted model can be finished.
"""

from __future__ import annotations

import copy as copy_module

from torch import nn

from .._spec import FEEDBACK_METHODS, METHODS, check_choice
from . import dfa, fa, lra
from ._common import FASTCREDIT, ConversionReport, Entry, ParameterCount, has_hooks, join

_OPTIONS = {**{m: fa.OPTIONS for m in FEEDBACK_METHODS}, "dfa": dfa.OPTIONS, "lra": lra.OPTIONS}

__all__ = ["ConversionReport", "Entry", "ParameterCount", "convert", "unconvert"]


def convert(model: nn.Module, method: str, *, copy: bool = False, **options) -> nn.Module:
    """Switch ``model`` to ``method``'s credit assignment; returns the model (the new root when
    the root itself is replaced, e.g. a bare ``nn.Linear``) with its report attached as
    ``conversion_report``. See the module docstring for what each method does.

    Options by method: fa/usf/frsf/brsf/kp/bp take the layers' ``feedback``, ``seed``,
    ``feedback_scale``, ``feedback_dist`` (with ``seed``, layer i gets a seed derived from
    (seed, i); without, each layer draws its own from torch's generator; usf and bp draw
    nothing, so they refuse ``seed`` and ``feedback_dist``). dfa takes
    :class:`~fastcredit.nn.DFAOutput`'s ``num_outputs``, ``feedback``, ``normalization``,
    ``dist``, ``scale``, ``signal`` ("error" or "sign"), ``batch_dims``, ``seed``,
    ``error_scale`` and ``preset`` (e.g. ``preset="launay2019"``), the points' ``spatial``,
    ``placement`` (``"before_weights"`` or ``"after_activation"``), ``sublayers`` (bool) and
    ``error_at`` (``"output"`` or ``"head_input"``; all above). lra takes ``beta``,
    ``gamma``, ``error``, ``use_fprime``, ``surrogate``, ``refine_steps``,
    ``clip_direction``, ``clip_update``, ``feedback_std`` and the output's
    ``loss_reduction``.
    """
    check_choice("method", method, METHODS)
    unknown = sorted(set(options) - set(_OPTIONS[method]))
    if unknown:
        raise ValueError(f"unknown option(s) {unknown} for method {method!r}; expected some of "
                         f"{_OPTIONS[method]}")
    if not isinstance(model, nn.Module):
        raise TypeError(f"convert expects an nn.Module, got {type(model).__name__}")
    _check_not_converted(model, method)
    if copy:
        model = copy_module.deepcopy(model)
    report = ConversionReport(method)
    if method == "dfa":
        dfa.convert_dfa(model, report, options)
    elif method == "lra":
        lra.convert_lra(model, report, options)
    else:
        model = fa.convert_feedback_layers(model, method, report, options)
    report.count_parameters(model)
    model.conversion_report = report
    return model


def _check_not_converted(model: nn.Module, method: str) -> None:
    """ValueError where ``model`` already holds another rule: a fastcredit layer of another
    method (FA-family layers of ``method`` itself are kept, so a partly converted model can
    be finished), any DFA or LRA module, or DFA points attached by convert."""
    for path, module in model.named_modules():
        feedback = isinstance(module, fa.FEEDBACK_LAYERS)
        if feedback and module.method == method:
            continue
        if feedback or isinstance(module, FASTCREDIT) or hasattr(module, "_dfa_output_path"):
            what = (f"a {module.method!r} layer" if feedback
                    else "converted to 'dfa'" if hasattr(module, "_dfa_output_path")
                    else f"a fastcredit.nn.{type(module).__name__}")
            raise ValueError(
                f"convert(method={method!r}): {path or 'the model'!r} is already {what}, and a "
                "model trains by one rule: call fastcredit.unconvert(model) first (or convert "
                "a fresh copy of the plain model)")


def _check_no_hooks(module: nn.Module, path: str) -> None:
    """ValueError where unconvert would replace a module that carries hooks (they would be
    lost, as convert refuses to lose them)."""
    if has_hooks(module):
        raise ValueError(f"unconvert: {path or 'the model'!r} ({type(module).__name__}) "
                         "carries hooks that its replacement would lose; remove them first "
                         "(and register them again on the plain module)")


def unconvert(model: nn.Module, *, copy: bool = False) -> nn.Module:
    """The inverse of :func:`convert`: every fastcredit FA-family layer (Linear, Conv,
    ConvTranspose, Conv1D, MultiheadAttention, RNN/LSTM/GRU) and LRA block becomes the torch
    layer (transformers' ``Conv1D`` for a converted one) with the same hyperparameters
    holding the *same* Parameter objects, and the activations LRA folded into its blocks go
    back to their slots; the DFA points and output op attached by convert are detached with
    their hooks. Feedback state (feedback matrices, LRA's E, DFA's seeds) is dropped. The
    result's ``state_dict()`` loads into the original architecture with ``strict=True``. In
    place (``copy=True``: on a deep copy); returns the model (the new root when the root
    itself was a fastcredit layer). ValueError for fastcredit modules convert does not make
    (DFA points placed by hand, an LRA block applying its own nonlinearity), which have no
    plain counterpart.
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"unconvert expects an nn.Module, got {type(model).__name__}")
    if copy:
        model = copy_module.deepcopy(model)
    dfa.unconvert_dfa(model)
    done: dict[int, nn.Module] = {}  # a layer registered twice becomes one plain layer

    def visit(module: nn.Module, path: str) -> nn.Module:
        if id(module) in done:
            return done[id(module)]
        plain = fa.plain_of(module) or lra.plain_of(module)
        if plain is not None:
            _check_no_hooks(module, path)
            done[id(module)] = plain
            return plain
        if isinstance(module, FASTCREDIT):
            raise ValueError(f"unconvert: {path or 'the model'!r} ({type(module).__name__}) "
                             "was not made by convert (placed by hand), so it has no plain "
                             "layer to return to")
        for name, child in list(module._modules.items()):
            if child is not None:
                new = visit(child, join(path, name))
                if new is not child:
                    setattr(module, name, new)
                    lra.unfold(module, child, path, _check_no_hooks)
        return module

    model = visit(model, "")
    if "conversion_report" in model.__dict__:
        del model.conversion_report
    return model
