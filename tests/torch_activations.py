"""Each activation name as torch's own function: the tests' independent definition of f (and,
through autograd, of f'), written apart from both the library (fastcredit.functional) and the
oracle (fastcredit.reference)."""

import torch
import torch.nn.functional as F

TORCH_ACTIVATIONS = {
    "identity": lambda a, slope: a.clone(),
    "tanh": lambda a, slope: torch.tanh(a),
    "sigmoid": lambda a, slope: torch.sigmoid(a),
    "relu": lambda a, slope: F.relu(a),
    "leaky_relu": lambda a, slope: F.leaky_relu(a, slope),
    "relu6": lambda a, slope: F.hardtanh(a, 0.0, 6.0),
    "softplus": lambda a, slope: F.softplus(a),
    "gelu": lambda a, slope: F.gelu(a),
    "sign": lambda a, slope: torch.sign(a),
}


def torch_activation(a: torch.Tensor, name: str, negative_slope: float = 0.01) -> torch.Tensor:
    return TORCH_ACTIVATIONS[name](a, negative_slope)
