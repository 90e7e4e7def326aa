import os
import sys
from pathlib import Path

import pytest
from hypothesis import HealthCheck, settings

# Hypothesis profiles (HYPOTHESIS_PROFILE=...): "default" is what `python -m pytest` and CI run
# (derandomized, so every run checks the same examples; tests/test_properties.py takes ~6 s on
# an idle 2-core machine); "thorough" draws 10x as many fresh random examples, for a soak.
settings.register_profile("default", max_examples=200, deadline=None, derandomize=True,
                          suppress_health_check=[HealthCheck.function_scoped_fixture])
settings.register_profile("thorough", settings.get_profile("default"), max_examples=2000,
                          derandomize=False)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "default"))

sys.path.insert(0, str(Path(__file__).parent))

import backends  # noqa: E402


@pytest.fixture(params=list(backends.BACKENDS))
def backend(request):
    """Every op implementation in turn (skipped where it is not built or has no device)."""
    return backends.get(request.param)


@pytest.fixture(params=[b for b in backends.BACKENDS if b != "reference"])
def native_backend(request):
    """Every compiled implementation: the ones the reference is the oracle for."""
    return backends.get(request.param)
