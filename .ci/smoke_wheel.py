"""Smoke test of an installed fastcredit wheel, run by CI from outside the source tree in a
venv that holds torch and the wheel only."""

import importlib.metadata
import json
import subprocess
import sys
import sysconfig
from pathlib import Path

import torch

import fastcredit

site_packages = Path(sysconfig.get_paths()["purelib"])
assert Path(fastcredit.__file__).is_relative_to(site_packages), fastcredit.__file__

torch_release = ".".join(torch.__version__.split(".")[:2])
requirements = importlib.metadata.requires("fastcredit")
core_requirements = [r for r in requirements if "extra ==" not in r]
assert core_requirements == [f"torch=={torch_release}.*"], requirements

assert torch.equal(fastcredit.feedback_matrix(3, 9, 10),
                   fastcredit.reference.feedback_matrix(3, 9, 10))

torch.manual_seed(0)
layer = fastcredit.nn.Linear(4, 3, method="fa")
x = torch.randn(5, 4, requires_grad=True)
layer(x).square().sum().backward()
assert layer.weight.grad.shape == (3, 4) and x.grad.shape == (5, 4)
# FA sends the error back through B, not W: the input gradient is delta @ B
delta = 2 * layer(x).detach()
assert torch.allclose(x.grad, delta @ layer.feedback_matrix(), atol=1e-6)

command = Path(sys.executable).with_name("fastcredit")  # the wheel's console script
info = json.loads(subprocess.run([command, "info", "--json"], capture_output=True, text=True,
                                 check=True).stdout)
assert info["version"] == fastcredit.__version__
assert info["torch_version"] == info["torch_runtime_version"] == torch.__version__
print(f"wheel smoke test passed: fastcredit {info['version']}, torch {info['torch_version']}")
