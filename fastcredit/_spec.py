"""fastcredit's vocabulary: every name an option may take, and the one checker of each.

Layers, ops, ``convert``, the command line and the oracle (:mod:`fastcredit.reference`) all
read their choices from here, so a name is spelled once and a bad value raises the same
exception with the same message wherever it enters.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

# Distributions of the seeded feedback values F(seed) (csrc/fastcredit/philox.h). The "32"
# ones map the same Philox words in float32 arithmetic, for GPUs with slow FP64 (same
# distribution; values not bit-identical across devices). UNIFORM_DISTS have variance 1/3.
DISTS = ("uniform", "normal", "rademacher", "uniform32", "normal32")
UNIFORM_DISTS = ("uniform", "uniform32")
# Activations every fused kernel knows (csrc/fastcredit/activations.h). "sign" uses the
# surrogate derivative 1{|a| <= 1} wherever f' is needed.
ACTIVATIONS = ("identity", "tanh", "sigmoid", "relu", "leaky_relu", "relu6", "softplus", "gelu",
               "sign")
# The subset whose f' follows from the output y = f(a), as PyTorch's own backward computes it
# (leaky_relu only with a slope >= 0).
ACTIVATIONS_FROM_OUTPUT = ("identity", "tanh", "sigmoid", "relu", "relu6", "leaky_relu")
# Where sign feedback's magnitude |M| comes from (fastcredit.sign_feedback).
SIGN_FEEDBACK_MODES = ("scalar", "stored", "seeded", "seeded_step")
# LRA-E's error units: f(a) - y ("gaussian") or its Cauchy form.
LRA_ERRORS = ("gaussian", "cauchy")
# Functions through which LRA forms targets and errors in place of f (None: f itself), and the
# activations that use one: those whose derivative is zero almost everywhere, for which
# f(a) - f(a - beta d) is zero unless beta |d| > |a|.
LRA_SURROGATES = ("hardtanh",)
STEP_ACTIVATIONS = ("sign",)

# Credit-assignment methods. The FA family swaps W for B in each layer's backward.
FEEDBACK_METHODS = ("fa", "usf", "frsf", "brsf", "kp", "bp")
METHODS = ("bp", "fa", "usf", "frsf", "brsf", "kp", "dfa", "lra")

UINT64_LIMIT = 1 << 64  # seeds are 64-bit patterns: 0 <= seed < 2**64
INT64_LIMIT = 1 << 63


def check_choice(name: str, value, allowed: Sequence) -> None:
    """ValueError naming ``name`` unless ``value`` is one of ``allowed``."""
    if value not in allowed:
        raise ValueError(f"unknown {name} {value!r}; expected one of {tuple(allowed)}")


def check_surrogate(surrogate) -> None:
    """ValueError unless ``surrogate`` is None or one of :data:`LRA_SURROGATES`."""
    if surrogate is not None:
        check_choice("surrogate", surrogate, LRA_SURROGATES)


def check_seed(seed, name: str = "seed") -> int:
    """A seed as the unsigned 64-bit int it denotes. TypeError unless an int (bool is not);
    ValueError unless 0 <= seed < 2**64."""
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise TypeError(f"{name} must be an int, got {type(seed).__name__}")
    if not 0 <= seed < UINT64_LIMIT:
        raise ValueError(f"{name} must satisfy 0 <= {name} < 2**64, got {seed}")
    return seed


def seed_as_int64(seed: int) -> int:
    """The int64 an op takes for a checked unsigned 64-bit seed (same bit pattern)."""
    return seed - UINT64_LIMIT if seed >= INT64_LIMIT else seed


def seed_from_int64(pattern: int) -> int:
    """The unsigned 64-bit seed of an int64 bit pattern (a seed buffer's value)."""
    return pattern % UINT64_LIMIT


def check_size(name: str, value) -> None:
    """TypeError unless an int; ValueError unless 0 <= value < 2**63 (the ops take int64)."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be an int, got {type(value).__name__}")
    if value < 0:
        raise ValueError(f"{name} must be non-negative, got {value}")
    if value >= INT64_LIMIT:
        raise ValueError(f"{name} must be < 2**63, got {value}")


def check_positive_int(name: str, value) -> None:
    """ValueError unless ``value`` is an int >= 1 (bool is not)."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name} must be an int >= 1, got {value!r}")


def check_finite(name: str, value, *, minimum: float | None = None,
                 strict: bool = False) -> float:
    """``value`` as a float; ValueError unless it is a finite real number above ``minimum``
    (``> minimum`` when ``strict``, else ``>=``)."""
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    if ok and minimum is not None:
        ok = value > minimum if strict else value >= minimum
    if not ok:
        bound = "" if minimum is None else f" {'>' if strict else '>='} {minimum:g}"
        raise ValueError(f"{name} must be a finite number{bound}, got {value!r}")
    return float(value)


def derive_seed(base: int, stream: int) -> int:
    """An independent-looking 64-bit seed per (base, stream): SplitMix64's finaliser
    (Steele, Lea & Flood, OOPSLA 2014). Used wherever one seed fans out to many layers."""
    mask = UINT64_LIMIT - 1
    z = (base + (stream + 1) * 0x9E3779B97F4A7C15) & mask
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & mask
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & mask
    return z ^ (z >> 31)
