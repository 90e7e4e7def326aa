"""Direct feedback alignment (Nøkland 2016), with the practices of Launay et al. 2019/2020.

``point``: :class:`DFAPoint`, which marks a hidden block's output. ``output``:
:class:`DFAOutput`, which delivers the projected output error to every point within one
``loss.backward()``. ``layout``: how tensors map to ``[rows, features]``. ``linear``:
:class:`DFALinear`, a fused linear + activation + point. ``bottleneck``: Launay's narrow-layer
emulation.
"""

from .bottleneck import Bottleneck
from .linear import DFALinear
from .output import ERROR_SCALES, FEEDBACK_MODES, NORMALIZATIONS, PRESETS, SIGNALS, DFAOutput
from .point import SPATIAL_MODES, DFAPoint, dfa_points

__all__ = ["ERROR_SCALES", "FEEDBACK_MODES", "NORMALIZATIONS", "PRESETS", "SIGNALS",
           "SPATIAL_MODES", "Bottleneck", "DFALinear", "DFAOutput", "DFAPoint", "dfa_points"]
