"""Small real datasets for fast training tests, offline (see ../shared/DATA.md)."""

from __future__ import annotations

import functools

import pytest
import torch


@functools.cache
def digits() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """scikit-learn's 8x8 handwritten digits (1797 samples, shipped inside its wheel), split
    1437/360 in a fixed order: (x_train [1437, 64], y_train, x_test [360, 64], y_test),
    pixels scaled to [0, 1] and standardised with the training mean and std."""
    datasets = pytest.importorskip("sklearn.datasets")
    bunch = datasets.load_digits()
    x = torch.tensor(bunch.data, dtype=torch.float32) / 16.0
    y = torch.tensor(bunch.target, dtype=torch.int64)
    order = torch.randperm(len(x), generator=torch.Generator().manual_seed(0))
    x, y = x[order], y[order]
    x_train, x_test = x[:1437], x[1437:]
    mean, std = x_train.mean(), x_train.std()
    return (x_train - mean) / std, y[:1437], (x_test - mean) / std, y[1437:]
