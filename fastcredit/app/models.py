"""The plain torch networks of ``fastcredit train --model`` (before any conversion)."""

from __future__ import annotations

import math

import torch
from torch import nn

MODELS = ("mlp", "lenet", "convnet", "resnet")


class BasicBlock(nn.Module):
    """He et al. 2016's basic residual block: conv3x3-BN-ReLU-conv3x3-BN, plus the input (a
    strided 1x1 conv + BN where the shape changes), then ReLU. [N, C_in, H, W] ->
    [N, C_out, H / stride, W / stride]."""

    def __init__(self, in_channels: int, channels: int, stride: int = 1):
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, channels, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(channels)
        self.relu1 = nn.ReLU()
        self.conv2 = nn.Conv2d(channels, channels, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(channels)
        self.shortcut = nn.Identity()
        if stride != 1 or in_channels != channels:
            self.shortcut = nn.Sequential(nn.Conv2d(in_channels, channels, 1, stride, bias=False),
                                          nn.BatchNorm2d(channels))
        self.relu2 = nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.bn2(self.conv2(self.relu1(self.bn1(self.conv1(x)))))
        return self.relu2(out + self.shortcut(x))


class ResNet(nn.Module):
    """A small ResNet for one-channel images: conv3x3(16)-BN-ReLU stem, a block at 16
    channels, a strided block to 32, global average pool, Linear. [N, H, W] or [N, 1, H, W]
    -> logits [N, classes]."""

    def __init__(self, classes: int, width: int = 16):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(1, width, 3, 1, 1, bias=False),
                                  nn.BatchNorm2d(width), nn.ReLU())
        self.layer1 = BasicBlock(width, width)
        self.layer2 = BasicBlock(width, 2 * width, stride=2)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(2 * width, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.layer2(self.layer1(self.stem(x if x.dim() == 4 else x.unsqueeze(1))))
        return self.fc(torch.flatten(self.pool(x), 1))


def network(model: str, input_shape: tuple[int, ...], classes: int, hidden: int) -> nn.Module:
    """The plain network ``model`` (one of MODELS) for inputs ``[N, *input_shape]``, with
    torch's default initialisation drawn from torch's global generator. lenet needs images of
    at least 16x16 (ValueError otherwise)."""
    unflatten = (nn.Unflatten(1, (1, input_shape[0])) if len(input_shape) == 2
                 else nn.Identity())
    if model == "mlp":
        features = math.prod(input_shape)
        return nn.Sequential(nn.Flatten(), nn.Linear(features, hidden), nn.Tanh(),
                             nn.Linear(hidden, hidden), nn.Tanh(), nn.Linear(hidden, classes))
    if model == "lenet":
        if input_shape[-1] < 16:
            raise ValueError(f"--model lenet needs images of at least 16x16, the dataset's are "
                             f"{input_shape}; use --model mlp, convnet or resnet")
        side = ((input_shape[-1] + 4 - 4) // 2 - 4) // 2  # conv5 pad 2, pool, conv5, pool
        return nn.Sequential(
            unflatten, nn.Conv2d(1, 6, 5, padding=2), nn.Tanh(), nn.MaxPool2d(2),
            nn.Conv2d(6, 16, 5), nn.Tanh(), nn.MaxPool2d(2), nn.Flatten(),
            nn.Linear(16 * side * side, 120), nn.Tanh(), nn.Linear(120, 84), nn.Tanh(),
            nn.Linear(84, classes))
    if model == "convnet":  # two 3x3 conv blocks and global pooling, for any image size
        return nn.Sequential(
            unflatten, nn.Conv2d(1, 32, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(32, 64, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(2), nn.Flatten(),
            nn.Linear(256, classes))
    if model == "resnet":
        return ResNet(classes)
    raise ValueError(f"model must be one of {MODELS}, got {model!r}")
