"""Small models shared by tests that need a real conv + linear graph and nothing more."""
from __future__ import annotations

import torch
import torch.nn as nn


class Net(nn.Module):
    """conv 3->4 (3x3), ReLU, global mean, linear 4->2: weights, biases, activations, input."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3)
        self.fc = nn.Linear(4, 2)

    def forward(self, x):
        return self.fc(torch.relu(self.conv(x)).mean((2, 3)))
