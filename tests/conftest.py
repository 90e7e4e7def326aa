import sys
from pathlib import Path

import pytest

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
