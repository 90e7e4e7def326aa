"""What every converter shares: the report, and how a module is classified (weight layer,
activation, normalisation, container, fastcredit module)."""

from __future__ import annotations

from dataclasses import dataclass, field

from torch import nn

from ..nn import Bottleneck, DFALinear, DFAOutput, DFAPoint, FeedbackLayer, LRABlock

CONTAINERS = (nn.Sequential, nn.ModuleList, nn.ModuleDict)
ACTIVATIONS = (nn.ReLU, nn.ReLU6, nn.LeakyReLU, nn.Tanh, nn.Sigmoid, nn.GELU, nn.SiLU, nn.ELU,
               nn.SELU, nn.CELU, nn.Softplus, nn.Hardtanh, nn.Hardswish, nn.Mish, nn.PReLU)
NORMS = (nn.modules.batchnorm._NormBase, nn.LayerNorm, nn.GroupNorm, nn.LocalResponseNorm,
         nn.RMSNorm)
FASTCREDIT = (FeedbackLayer, DFAPoint, DFAOutput, DFALinear, LRABlock)
# A Bottleneck counts as the weight layer it wraps: it is no block of its own.
WEIGHT_LAYERS = (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d, Bottleneck)


@dataclass(frozen=True)
class Entry:
    """One module in a :class:`ConversionReport`: its path in the model (``""`` for the root),
    its original type name, and what happened to it."""

    path: str
    kind: str
    note: str


@dataclass
class ConversionReport:
    """What :func:`convert` did, module by module.

    ``converted``: modules replaced or given a DFA point / output. ``unchanged``: modules
    kept as they are on purpose (parameter-free layers, normalisation, embeddings, DFA's
    in-block layers). ``unsupported``: modules with their own parameters that the method
    cannot reach: kept as they are, so their backward is plain backprop. ``blocks`` (DFA
    only): each point's path -> the paths of the modules with parameters in its block, and
    ``"output"`` -> the output block's.
    """

    method: str
    converted: list[Entry] = field(default_factory=list)
    unchanged: list[Entry] = field(default_factory=list)
    unsupported: list[Entry] = field(default_factory=list)
    blocks: dict[str, list[str]] = field(default_factory=dict)
    parameters: list[ParameterCount] = field(default_factory=list)

    def count_parameters(self, model: nn.Module) -> None:
        """Fill :attr:`parameters`: every Parameter of ``model`` counted once (a tied weight
        where it is first listed, the method's modules first), by the module listing it."""
        in_blocks = {p for paths in self.blocks.values() for p in paths}
        seen: set[int] = set()
        self.parameters = []
        lists = ((self.converted, None), (self.unchanged, "backprop"),
                 (self.unsupported, "unsupported"))
        for entries, category in lists:
            for entry in entries:
                module = model.get_submodule(entry.path)
                fresh = [p for p in module.parameters() if id(p) not in seen]
                seen.update(id(p) for p in fresh)
                if fresh:
                    self.parameters.append(ParameterCount(
                        entry.path, entry.kind, _category(entry, category, in_blocks),
                        sum(p.numel() for p in fresh)))
        rest = [p for p in model.parameters() if id(p) not in seen]
        if rest:
            self.parameters.append(ParameterCount("(elsewhere)", "Parameter", "backprop",
                                                  sum(p.numel() for p in rest)))

    @property
    def shares(self) -> dict[str, float]:
        """Share of the model's parameters per category: ``"method"`` (trained by the
        method's rule: its layers, and for DFA the layers inside its blocks),
        ``"normalisation"``, ``"embedding"``, ``"backprop"`` (other modules kept as they
        are) and ``"unsupported"``; only categories present, in that order."""
        total = sum(c.count for c in self.parameters)
        order = ("method", "normalisation", "embedding", "backprop", "unsupported")
        sums = {k: sum(c.count for c in self.parameters if c.category == k) for k in order}
        return {k: v / total for k, v in sums.items() if v} if total else {}

    def __str__(self) -> str:
        lines = [f"fastcredit.convert(method={self.method!r})"]
        counts = {c.path: c.count for c in self.parameters}
        for title, entries in (("converted", self.converted), ("unchanged", self.unchanged),
                               ("unsupported", self.unsupported)):
            lines.append(f"{title} ({len(entries)}):")
            lines += [f"  {e.path or '(root)'}  {e.kind}: {e.note}"
                      + (f"  [{counts[e.path]:,} parameters]" if e.path in counts else "")
                      for e in entries]
        total = sum(c.count for c in self.parameters)
        if total:
            lines.append(f"parameters ({total:,}):")
            for category, share in self.shares.items():
                title = (f"trained by {self.method}" if category == "method"
                         else f"backprop ({category})" if category != "backprop"
                         else "backprop (other)")
                lines.append(f"  {title}: {100 * share:.1f} %")
        return "\n".join(lines)


@dataclass(frozen=True)
class ParameterCount:
    """Parameters a module of the report holds (each Parameter counted once), and whether the
    method trains them: ``category`` as in :attr:`ConversionReport.shares`."""

    path: str
    kind: str
    category: str
    count: int


def _category(entry: Entry, default: str | None, in_blocks: set[str]) -> str:
    if default is None or entry.path in in_blocks or entry.note == "already a fastcredit module":
        return "method"
    if default == "unsupported":
        return default
    if entry.note.startswith("normalisation"):
        return "normalisation"
    if entry.note.startswith(("lookup table", _LEARNT_TOKENS)):
        return "embedding"
    return default


def join(prefix: str, name: str) -> str:
    return f"{prefix}.{name}" if prefix else name


def has_hooks(module: nn.Module) -> bool:
    """Whether ``module`` carries hooks, which a replacement module would not have."""
    return any((module._forward_hooks, module._forward_pre_hooks, module._backward_hooks,
                module._backward_pre_hooks))


def swap_blocker(module: nn.Module) -> str | None:
    """Why a weight layer cannot be replaced by another module object, or None."""
    if has_hooks(module):
        return ("has hooks (e.g. the old weight_norm's) that a replacement would lose: kept "
                "as is, its backward is backprop's")
    if not isinstance(getattr(module, "weight", nn.Parameter()), nn.Parameter):
        return "its weight is not a Parameter: kept as is, its backward is backprop's"
    return None


def owns_parameters(module: nn.Module) -> bool:
    return any(True for _ in module.parameters(recurse=False))


# Learnt vectors that a module adds to, or concatenates with, its token sequence, by the
# names transformers and timm give them (ViT's class token and position embeddings, DeiT's
# distillation token, register tokens).
TOKEN_PARAMETERS = frozenset({"cls_token", "mask_token", "dist_token", "reg_token",
                              "register_tokens", "position_embeddings", "pos_embed"})
_LEARNT_TOKENS = "learnt tokens and position embeddings"


def _only_learnt_tokens(module: nn.Module) -> bool:
    """Whether every Parameter ``module`` holds itself is a learnt token or position
    embedding: one of :data:`TOKEN_PARAMETERS` with a leading broadcast dim of 1
    (``[1, tokens, features]``)."""
    own = list(module.named_parameters(recurse=False))
    return bool(own) and all(name in TOKEN_PARAMETERS and p.dim() >= 2 and p.shape[0] == 1
                             for name, p in own)


def kept_note(module: nn.Module) -> str | None:
    """Why a module is fine left as is, or None when it transports error through parameters
    that the method cannot reach."""
    if isinstance(module, FASTCREDIT):
        return "already a fastcredit module"
    if isinstance(module, NORMS):
        return "normalisation layer: backprop's local backward, as in the FA literature"
    if isinstance(module, (nn.Embedding, nn.EmbeddingBag)):
        return "lookup table: its input is indices, so it sends no error down"
    if isinstance(module, ACTIVATIONS):
        return "activation (elementwise)"
    if not owns_parameters(module):
        return "no parameters"
    if _only_learnt_tokens(module):
        names = ", ".join(n for n, _ in module.named_parameters(recurse=False))
        return (f"{_LEARNT_TOKENS} ({names}): added to or concatenated with the sequence, "
                "so the error passes them by without a weight product; their gradient is the "
                "error at their positions")
    return None


def is_weight_layer(module: nn.Module) -> bool:
    return isinstance(module, WEIGHT_LAYERS)
