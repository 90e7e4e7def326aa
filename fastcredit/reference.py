"""Pure-PyTorch references of every fastcredit op.

Each function here is the specification of the fused op of the same name in
:mod:`fastcredit.ops`: same signature, plain tensor code, no speed tricks. The tests use
them as the oracle and as the ``reference`` backend. Users may call it as an independent
check of the fused ops; nothing in the library imports it (a test guards that). It depends
on torch and on the names in :mod:`fastcredit._spec` only: no library code.
"""

from __future__ import annotations

import math

import torch

from ._spec import ACTIVATIONS, DISTS, LRA_ERRORS, LRA_SURROGATES, SIGN_FEEDBACK_MODES

_MASK32 = 0xFFFFFFFF
_PHILOX_MUL = (0xD2511F53, 0xCD9E8D57)
_PHILOX_WEYL = (0x9E3779B9, 0xBB67AE85)


def _mulhilo32(a: int, b: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """High and low 32-bit words of a * b for a 32-bit constant a and int64 b < 2**32.

    b is split into 16-bit halves so that no int64 product overflows.
    """
    p_lo = a * (b & 0xFFFF)
    p_hi = a * (b >> 16)
    lo = (p_lo + ((p_hi & 0xFFFF) << 16)) & _MASK32
    hi = (p_hi + (p_lo >> 16)) >> 16
    return hi, lo


def philox4x32_10(
    counter: tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor], key: tuple[int, int]
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Philox4x32-10 on int64 tensors holding 32-bit words (Salmon et al., SC'11)."""
    c0, c1, c2, c3 = counter
    k0, k1 = key
    for _ in range(10):
        hi0, lo0 = _mulhilo32(_PHILOX_MUL[0], c0)
        hi1, lo1 = _mulhilo32(_PHILOX_MUL[1], c2)
        c0, c1, c2, c3 = hi1 ^ c1 ^ k0, lo1, hi0 ^ c3 ^ k1, lo0
        k0 = (k0 + _PHILOX_WEYL[0]) & _MASK32
        k1 = (k1 + _PHILOX_WEYL[1]) & _MASK32
    return c0, c1, c2, c3


def _seed_key(seed: int) -> tuple[int, int]:
    seed &= (1 << 64) - 1  # an op's int64 seed is read as its 64-bit pattern
    return seed & _MASK32, seed >> 32


def _normal32_from_words(words: torch.Tensor) -> torch.Tensor:
    """normal32: Box-Muller in float32 on lane pairs, the angle 2 pi t (t = j / 2**24) first
    reduced in integers to a quadrant q = round(4 t) and a = 2 pi (t - q / 4) in [-pi/4, pi/4]."""
    radius_words, angle_words = words[..., 0::2], words[..., 1::2]
    u1 = ((radius_words >> 8) + 1).to(torch.float32) * 2.0**-24  # exact in float32
    r = torch.sqrt(-2.0 * torch.log(u1))
    j = angle_words >> 8
    quarter = (j + (1 << 21)) >> 22
    q = quarter & 3
    step = torch.tensor(2 * math.pi, dtype=torch.float32) * 2.0**-24  # float32 2 pi, exact / 2**24
    a = (j - (quarter << 22)).to(torch.float32) * step
    sin_a, cos_a = torch.sin(a), torch.cos(a)
    sin_r = torch.where((q & 1) == 1, cos_a, sin_a)
    cos_r = torch.where((q & 1) == 1, sin_a, cos_a)
    cos_theta = torch.where(((q + 1) & 2) != 0, -cos_r, cos_r)
    sin_theta = torch.where((q & 2) != 0, -sin_r, sin_r)
    return torch.stack((r * cos_theta, r * sin_theta), dim=-1).flatten(-2)


def _values_from_words(words: torch.Tensor, dist: str) -> torch.Tensor:
    """Map Philox words [..., 4] to values [..., 4] of the given distribution: float64, or
    float32 for the float32 generator ("uniform32", "normal32")."""
    if dist == "uniform32":  # uniform's values, exact in float32
        return _values_from_words(words, "uniform").to(torch.float32)
    if dist == "normal32":
        return _normal32_from_words(words)
    if dist == "uniform":
        signed = torch.where(words >= 2**31, words - 2**32, words)
        return (signed >> 8).to(torch.float64) * 2.0**-23
    if dist == "rademacher":
        return (1 - 2 * (words >> 31)).to(torch.float64)
    if dist == "normal":
        radius_words, angle_words = words[..., 0::2], words[..., 1::2]
        u1 = ((radius_words >> 8) + 1).to(torch.float64) * 2.0**-24
        theta = (2 * math.pi) * ((angle_words >> 8).to(torch.float64) * 2.0**-24)
        r = torch.sqrt(-2.0 * torch.log(u1))
        return torch.stack((r * torch.cos(theta), r * torch.sin(theta)), dim=-1).flatten(-2)
    raise ValueError(f"unknown dist {dist!r}; expected one of {DISTS}")


def feedback_matrix(
    seed: int,
    rows: int,
    cols: int,
    *,
    dist: str = "uniform",
    scale: float = 1.0,
    dtype: torch.dtype = torch.float32,
    device: torch.device | str = "cpu",
) -> torch.Tensor:
    """The seeded feedback matrix F(seed)[:rows, :cols], scaled.

    Entry (r, c) is lane ``c % 4`` of Philox4x32-10 at counter
    ``(c // 4 mod 2**32, c // 4 >> 32, r mod 2**32, r >> 32)`` under key ``(seed mod 2**32,
    seed >> 32)``, mapped by ``dist``: uniform on [-1, 1) with 24-bit resolution, Box-Muller
    normal from lane pairs, or the sign of the top bit, computed in float64; "uniform32" and
    "normal32" compute the same mappings (and the product with ``scale``) in float32.
    """
    groups = (cols + 3) // 4
    row = torch.arange(rows, dtype=torch.int64).repeat_interleave(groups)
    group = torch.arange(groups, dtype=torch.int64).repeat(rows)
    counter = (group & _MASK32, group >> 32, row & _MASK32, row >> 32)
    words = torch.stack(philox4x32_10(counter, _seed_key(seed)), dim=-1)
    values = _values_from_words(words, dist).reshape(rows, groups * 4)[:, :cols]
    # the float32 generator multiplies by scale rounded to float32, in float32
    factor = torch.tensor(scale, dtype=values.dtype)
    return (values * factor).to(dtype=dtype, device=device)


def feedback_fill_(
    out: torch.Tensor, seed: int, *, dist: str = "uniform", scale: float = 1.0
) -> torch.Tensor:
    """Fill the 2-D tensor ``out`` with ``feedback_matrix(seed, *out.shape, ...)``."""
    rows, cols = out.shape
    out.copy_(feedback_matrix(seed, rows, cols, dist=dist, scale=scale, dtype=out.dtype))
    return out


def seeded_project(
    x: torch.Tensor,
    seed: int,
    cols: int,
    *,
    dist: str = "uniform",
    scale: float = 1.0,
    transpose: bool = False,
) -> torch.Tensor:
    """``x [N, K] @ F [K, cols]``, or ``x @ F[cols, K].T`` when ``transpose``.

    Half-precision inputs are computed in float32 and the result rounded back.
    """
    acc = torch.float64 if x.dtype == torch.float64 else torch.float32
    k = x.shape[1]
    if transpose:
        f = feedback_matrix(seed, cols, k, dist=dist, scale=scale, dtype=acc, device=x.device).T
    else:
        f = feedback_matrix(seed, k, cols, dist=dist, scale=scale, dtype=acc, device=x.device)
    return (x.to(acc) @ f).to(x.dtype)


def activation_value(x: torch.Tensor, name: str, negative_slope: float = 0.01) -> torch.Tensor:
    """f(x) for every activation the kernels know (torch's definitions; sign(0) = 0)."""
    functions = {
        "identity": lambda t: t,
        "tanh": torch.tanh,
        "sigmoid": torch.sigmoid,
        "relu": torch.relu,
        "leaky_relu": lambda t: torch.nn.functional.leaky_relu(t, negative_slope),
        "relu6": torch.nn.functional.relu6,
        "softplus": torch.nn.functional.softplus,
        "gelu": torch.nn.functional.gelu,
        "sign": torch.sign,
    }
    if name not in functions:
        raise ValueError(f"unknown activation {name!r}; expected one of {ACTIVATIONS}")
    return functions[name](x)


def activation_grad(x: torch.Tensor, name: str, negative_slope: float = 0.01) -> torch.Tensor:
    """f'(x) as torch's backward computes it; for sign, the surrogate 1{|x| <= 1}."""
    if name == "sign":
        return (x.abs() <= 1).to(x.dtype)
    with torch.enable_grad():
        leaf = x.detach().requires_grad_()
        (grad,) = torch.autograd.grad(activation_value(leaf, name, negative_slope).sum(), leaf)
    return grad


def lra_error(
    pre_activation: torch.Tensor,
    displacement: torch.Tensor,
    beta: float,
    activation: str = "tanh",
    error: str = "gaussian",
    use_fprime: bool = False,
    negative_slope: float = 0.01,
    surrogate: str | None = None,
) -> torch.Tensor:
    """LRA-E error units of a layer, elementwise over any shape.

    target ``y = f(a - beta * d)``; ``e = f(a) - y`` ("gaussian") or
    ``2 (f(a) - y) / (1 + (f(a) - y)**2)`` ("cauchy"); times ``f'(a)`` when ``use_fprime``.
    ``surrogate="hardtanh"``: f replaced by clamp(., -1, 1) in the target and in f(a) (not in
    f'). Half-precision inputs are computed in float32.
    """
    if error not in LRA_ERRORS:
        raise ValueError(f"unknown error {error!r}; expected one of {LRA_ERRORS}")
    if surrogate is not None and surrogate not in LRA_SURROGATES:
        raise ValueError(f"unknown surrogate {surrogate!r}; expected one of {LRA_SURROGATES}")
    a = pre_activation.to(torch.float64 if pre_activation.dtype == torch.float64 else torch.float32)
    d = displacement.to(a.dtype)

    def target_value(x):
        return x.clamp(-1, 1) if surrogate == "hardtanh" else activation_value(
            x, activation, negative_slope)

    diff = target_value(a) - target_value(a - beta * d)
    e = diff if error == "gaussian" else 2 * diff / (1 + diff * diff)
    if use_fprime:
        e = e * activation_grad(a, activation, negative_slope)
    return e.to(pre_activation.dtype)


def step_seed(seed: int, step: int) -> int:
    """The seed of brSF's draw number ``step`` under ``seed``: words 0 and 1 (low, high) of
    Philox4x32-10 at counter ``(step mod 2**32, step >> 32, 2**32 - 1, 2**32 - 1)`` under key
    ``seed``, i.e. of F(seed)'s block at row 2**64 - 1, a row no feedback matrix reaches."""
    counter = (step & _MASK32, step >> 32, _MASK32, _MASK32)
    words = philox4x32_10(tuple(torch.tensor([c]) for c in counter), _seed_key(seed))
    return int(words[0]) | int(words[1]) << 32


def _sign(x: torch.Tensor) -> torch.Tensor:
    """sign with sign(0) = 0 and sign(NaN) = NaN (torch.sign maps NaN to 0)."""
    return torch.where(torch.isnan(x), x, torch.sign(x))


def sign_feedback(
    weight: torch.Tensor,
    mode: str = "scalar",
    *,
    scale: float = 1.0,
    magnitude: torch.Tensor | None = None,
    seed: int = 0,
    step: int = 0,
    dist: str = "uniform",
) -> torch.Tensor:
    """``scale * |M| ⊙ sign(W)``, W ``[out, in, *kernel]`` viewed as ``[out, rest]``.

    |M| is 1 (``"scalar"``), ``|magnitude|`` (``"stored"``; the product ``|magnitude| * scale``
    is rounded to W's dtype first), ``|feedback_matrix(seed, out, rest, dist=dist)|``
    (``"seeded"``; ``scale * F`` computed in float64 and rounded once) or the same at seed
    ``step_seed(seed, step)`` (``"seeded_step"``).
    """
    if mode == "scalar":
        return _sign(weight) * scale
    if mode == "stored":
        return _sign(weight) * (magnitude.abs() * scale)
    if mode not in ("seeded", "seeded_step"):
        raise ValueError(f"unknown mode {mode!r}; expected one of {SIGN_FEEDBACK_MODES}")
    if mode == "seeded_step":
        seed = step_seed(seed, int(step))
    rows = weight.shape[0]
    cols = weight.numel() // rows if rows else 0
    f = feedback_matrix(seed, rows, cols, dist=dist, scale=scale, dtype=torch.float64)
    magnitude = f.abs().to(device=weight.device, dtype=weight.dtype).reshape(weight.shape)
    return _sign(weight) * magnitude


# grad * f'(a) from y = f(a): PyTorch's own backward ops for the activations that do so (the
# threshold/hardtanh backward test "y <= 0", so f' of a NaN output is 1, as there).
_BACKWARD_FROM_OUTPUT = {
    "identity": lambda g, y, slope: g,
    "tanh": lambda g, y, slope: torch.ops.aten.tanh_backward(g, y),
    "sigmoid": lambda g, y, slope: torch.ops.aten.sigmoid_backward(g, y),
    "relu": lambda g, y, slope: torch.ops.aten.threshold_backward(g, y, 0),
    "relu6": lambda g, y, slope: torch.ops.aten.hardtanh_backward(g, y, 0.0, 6.0),
    "leaky_relu": lambda g, y, slope: torch.ops.aten.leaky_relu_backward(g, y, slope, True),
}


def grad_from_output_supported(activation: str, negative_slope: float = 0.01) -> bool:
    """Whether f' of ``activation`` follows from its output alone (leaky_relu: slope >= 0)."""
    return activation in _BACKWARD_FROM_OUTPUT and not (
        activation == "leaky_relu" and negative_slope < 0
    )


def dfa_backward_epilogue(
    grad: torch.Tensor,
    saved: torch.Tensor,
    activation: str = "tanh",
    *,
    negative_slope: float = 0.01,
    saved_is_output: bool = False,
) -> tuple[torch.Tensor, torch.Tensor]:
    """``delta = grad * f'(a)`` and ``grad_bias = delta.sum(0)``. With ``saved = a``, f' is
    :func:`activation_grad` (torch autograd; sign's surrogate); with ``saved_is_output``,
    ``saved = f(a)`` and f' is PyTorch's backward op in terms of the output. Half precision is
    computed in float32."""
    if grad.dim() != 2 or grad.shape != saved.shape:
        raise ValueError("grad and saved must both be [N, D]")
    acc = torch.float64 if grad.dtype == torch.float64 else torch.float32
    if saved_is_output:
        if not grad_from_output_supported(activation, negative_slope):
            raise ValueError(f"the derivative of {activation!r} needs the pre-activation")
        delta = _BACKWARD_FROM_OUTPUT[activation](grad.to(acc), saved.to(acc), negative_slope)
    else:
        delta = grad.to(acc) * activation_grad(saved.to(acc), activation, negative_slope)
    return delta.to(grad.dtype), delta.sum(0).to(grad.dtype)
