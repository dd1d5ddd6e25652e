"""Scientific-ML operator models written as users write them: FNO, DeepONet, LSTM."""
from __future__ import annotations

import torch
from torch import nn


class SpectralConv1d(nn.Module):
    """FNO's spectral convolution: rfft, a complex einsum on the lowest modes, irfft."""

    def __init__(self, width: int, modes: int):
        super().__init__()
        self.modes = modes
        scale = 1.0 / (width * width)
        self.weights = nn.Parameter(scale * torch.randn(width, width, modes, dtype=torch.cfloat))

    def forward(self, x):
        x_ft = torch.fft.rfft(x)
        low = torch.einsum("bix,iox->box", x_ft[:, :, :self.modes], self.weights)
        pad = torch.zeros_like(low[:, :, :1]).expand(-1, -1, x_ft.shape[-1] - self.modes)
        return torch.fft.irfft(torch.cat([low, pad], dim=2), n=x.size(-1))


class FNO1d(nn.Module):
    def __init__(self, in_channels: int = 3, width: int = 16, modes: int = 6, layers: int = 2):
        super().__init__()
        self.lift = nn.Conv1d(in_channels, width, 1)
        self.spectral = nn.ModuleList(SpectralConv1d(width, modes) for _ in range(layers))
        self.local = nn.ModuleList(nn.Conv1d(width, width, 1) for _ in range(layers))
        self.project = nn.Sequential(nn.Conv1d(width, 32, 1), nn.GELU(), nn.Conv1d(32, 1, 1))

    def forward(self, x):                       # (batch, channels, grid)
        h = self.lift(x)
        for spectral, local in zip(self.spectral, self.local):
            h = torch.nn.functional.gelu(spectral(h) + local(h))
        return self.project(h)


class DeepONet(nn.Module):
    def __init__(self, sensors: int = 20, coords: int = 2, width: int = 32):
        super().__init__()
        self.branch = nn.Sequential(nn.Linear(sensors, 64), nn.Tanh(), nn.Linear(64, width))
        self.trunk = nn.Sequential(nn.Linear(coords, 64), nn.Tanh(), nn.Linear(64, width))
        self.bias = nn.Parameter(torch.zeros(1))

    def forward(self, u, y):                   # u: (batch, sensors), y: (batch, coords)
        return torch.einsum("bi,bi->b", self.branch(u), self.trunk(y)) + self.bias


class LSTMSurrogate(nn.Module):
    def __init__(self, features: int = 6, hidden: int = 32):
        super().__init__()
        self.encode = nn.Linear(features, hidden)
        self.lstm = nn.LSTM(hidden, hidden, batch_first=True)
        self.head = nn.Sequential(nn.Linear(hidden, 32), nn.ReLU(), nn.Linear(32, 1))

    def forward(self, x):                       # (batch, time, features)
        h, _ = self.lstm(torch.tanh(self.encode(x)))
        return self.head(h[:, -1])


class AllocatingSpectralConv1d(nn.Module):
    """The usual hand-written spectral convolution: allocate the output, fill its low modes."""

    def __init__(self, width: int, modes: int):
        super().__init__()
        self.width, self.modes = width, modes
        self.weights = nn.Parameter(torch.randn(width, width, modes, dtype=torch.cfloat) / width)

    def forward(self, x):
        x_ft = torch.fft.rfft(x)
        out_ft = torch.zeros(x.size(0), self.width, x.size(-1) // 2 + 1, dtype=torch.cfloat)
        out_ft[:, :, :self.modes] = torch.einsum("bix,iox->box", x_ft[:, :, :self.modes],
                                                 self.weights)
        return torch.fft.irfft(out_ft, n=x.size(-1))


class AllocatingFNO1d(FNO1d):
    def __init__(self):
        super().__init__()
        self.spectral = nn.ModuleList(AllocatingSpectralConv1d(16, 6) for _ in range(2))


class ConvHead(nn.Module):
    """A flatten boundary: positions read through a channel gate and a position gate."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv3d(2, 3, 1)
        self.fc = nn.Linear(3 * 8, 4)
        self.out = nn.Linear(4, 1)

    def forward(self, x):
        h = torch.relu(self.conv(x)).permute(0, 2, 3, 4, 1).flatten(1)
        return self.out(torch.relu(self.fc(h)))
