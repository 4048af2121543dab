"""CIFAR-10 ShuffleNetV2 x0.5 (chenyaofo/pytorch-cifar-models), as ../shared/data/README.md
describes it layer by layer, and its data pipeline.

Weights: ``<repo>/../shared/data/weights/cifar10_shufflenetv2_x0_5-1308b4e9.pt`` (a bare state
dict, loaded strictly). Input: RGB in [0, 1], normalised with mean (0.4914, 0.4822, 0.4465) and
std (0.2023, 0.1994, 0.2010) -- not the ResNets' ImageNet statistics. Float top-1 on the 10,000
test images: 90.65 %.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import torch.nn as nn

ROOT = Path(__file__).resolve().parents[2]
DATA = ROOT.parent / "shared" / "data"
WEIGHTS = DATA / "weights" / "cifar10_shufflenetv2_x0_5-1308b4e9.pt"
MEAN = torch.tensor([0.4914, 0.4822, 0.4465]).view(1, 3, 1, 1)
STD = torch.tensor([0.2023, 0.1994, 0.2010]).view(1, 3, 1, 1)


def _pw(cin: int, cout: int) -> nn.Conv2d:
    return nn.Conv2d(cin, cout, 1, 1, 0, bias=False)


def _dw(c: int, stride: int) -> nn.Conv2d:
    return nn.Conv2d(c, c, 3, stride, 1, groups=c, bias=False)


def channel_shuffle(x: torch.Tensor, groups: int = 2) -> torch.Tensor:
    n, c, h, w = x.shape
    x = x.view(n, groups, c // groups, h, w)
    x = torch.transpose(x, 1, 2).contiguous()
    return x.view(n, c, h, w)


class InvertedResidual(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int):
        super().__init__()
        self.stride = stride
        half = cout // 2
        if stride > 1:
            self.branch1 = nn.Sequential(_dw(cin, stride), nn.BatchNorm2d(cin),
                                         _pw(cin, half), nn.BatchNorm2d(half), nn.ReLU(inplace=True))
        else:
            self.branch1 = nn.Sequential()
        b2_in = cin if stride > 1 else half
        self.branch2 = nn.Sequential(
            _pw(b2_in, half), nn.BatchNorm2d(half), nn.ReLU(inplace=True),
            _dw(half, stride), nn.BatchNorm2d(half),
            _pw(half, half), nn.BatchNorm2d(half), nn.ReLU(inplace=True))

    def forward(self, x):
        if self.stride == 1:
            x1, x2 = x.chunk(2, dim=1)
            out = torch.cat((x1, self.branch2(x2)), dim=1)
        else:
            out = torch.cat((self.branch1(x), self.branch2(x)), dim=1)
        return channel_shuffle(out, 2)


class ShuffleNetV2(nn.Module):
    def __init__(self, repeats=(4, 8, 4), widths=(24, 48, 96, 192, 1024), num_classes=10):
        super().__init__()
        self.conv1 = nn.Sequential(nn.Conv2d(3, widths[0], 3, 1, 1, bias=False),
                                   nn.BatchNorm2d(widths[0]), nn.ReLU(inplace=True))
        cin = widths[0]
        for name, n, cout in zip(("stage2", "stage3", "stage4"), repeats, widths[1:4]):
            units = [InvertedResidual(cin, cout, 2)]
            units += [InvertedResidual(cout, cout, 1) for _ in range(n - 1)]
            setattr(self, name, nn.Sequential(*units))
            cin = cout
        self.conv5 = nn.Sequential(_pw(cin, widths[4]), nn.BatchNorm2d(widths[4]),
                                   nn.ReLU(inplace=True))
        self.fc = nn.Linear(widths[4], num_classes)

    def forward(self, x):
        x = self.conv1(x)
        x = self.stage4(self.stage3(self.stage2(x)))
        x = self.conv5(x)
        x = x.mean([2, 3])
        return self.fc(x)


def available() -> bool:
    return WEIGHTS.is_file() and (DATA / "cifar10" / "test.npz").is_file() \
        and (DATA / "cifar10" / "calib.npz").is_file()


def shufflenet_v2_x0_5() -> ShuffleNetV2:
    """The pretrained model, loaded strictly, in eval mode."""
    model = ShuffleNetV2()
    sd = torch.load(WEIGHTS, map_location="cpu", weights_only=True)
    model.load_state_dict(sd, strict=True)
    return model.eval()


def cifar(split: str, n: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """(images normalised for this model, NCHW float32; labels int64); split 'calib' or 'test'."""
    z = np.load(DATA / "cifar10" / f"{split}.npz")
    x = torch.from_numpy(z["images"][:n]).permute(0, 3, 1, 2).float() / 255.0
    return (x - MEAN) / STD, torch.from_numpy(z["labels"][:n]).long()
