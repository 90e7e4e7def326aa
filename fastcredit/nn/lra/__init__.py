"""Local Representation Alignment (LRA-E, Ororbia & Mali 2019) as drop-in layers.

The backward of each block is LRA's rule, so a plain ``loss.backward()`` trains the network:

* the output block turns the incoming gradient into the unnormalised error
  ``e_L = softmax - onehot`` (it multiplies by the batch size when the loss is a mean),
* a hidden block receives the displacement ``d = e_{l+1} E_{l+1}`` from above in place of a
  gradient, forms the target ``y = f(a - beta d)`` and error units ``e = f(a) - y``
  (or the Cauchy form), and
* every block sets ``W.grad = e^T h_prev / N`` (no f' unless ``use_fprime``), ``b.grad =
  sum(e) / N`` and sends ``e E`` down, E being its error-weight matrix (W's shape).

With ``gamma > 0`` E is a Parameter whose gradient is ``gamma * W.grad`` (the authors feed
``gamma * dW`` to the optimiser), so E tracks W; with ``gamma = 0`` E is a fixed buffer.
Options of the original LRA (arXiv 1803.01834): ``refine_steps`` K > 1 moves the input of a
block K times along its error pathway (``h <- h - beta clip(e(h) E)``, e re-evaluated by re-running
the block on the moved input) and sends the total move divided by beta as the displacement;
``clip_direction`` bounds each move's Frobenius norm and ``clip_update`` that of ``W.grad``.
K = 1 without clipping is exactly LRA-E.

Activations whose derivative is zero almost everywhere (sign) form targets and errors through a
surrogate (hardtanh by default; ``surrogate=None`` keeps the exact rule): fastcredit's choice,
not a rule verified in the LRA papers.

``rule``: the backward of a hidden and of the output block. ``blocks``: the modules.
``conv``: the convolution blocks (error units over feature maps, displacement sent down by the
transposed convolution with E).
"""

from .blocks import LOSS_REDUCTIONS, LRA, WEIGHT_INITS, LRABlock, LRALinear, LRAOutput
from .conv import LRAConv1d, LRAConv2d, LRAConv3d

__all__ = ["LOSS_REDUCTIONS", "LRA", "LRABlock", "LRAConv1d", "LRAConv2d", "LRAConv3d",
           "LRALinear", "LRAOutput", "WEIGHT_INITS"]
