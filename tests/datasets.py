"""Small real datasets for fast training tests, offline (see ../shared/DATA.md)."""

from __future__ import annotations

import functools
import os

import pytest
import torch


@functools.cache
def digits() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """fastcredit.app.data.s digits flattened: (x_train [1437, 64], y_train, x_test [360, 64],
    y_test); skips the test when scikit-learn is missing."""
    pytest.importorskip("sklearn.datasets")
    from fastcredit.app.data import load_digits

    data = load_digits()
    return data.x_train.flatten(1), data.y_train, data.x_test.flatten(1), data.y_test


def installed_or_skip(load, variable: str, package: str):
    """``load()``'s result; when it raises DatasetNotFoundError, skip the test, unless
    ``$variable`` is 1 (set by .ci/run where apt can install ``package``): then fail it."""
    from fastcredit.app.data import DatasetNotFoundError

    try:
        return load()
    except DatasetNotFoundError as error:
        if os.environ.get(variable) == "1":
            pytest.fail(f"{variable}=1 but {error}")
        pytest.skip(f"{package} not installed (apt-get install {package})")
