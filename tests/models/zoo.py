"""A zoo of small, hand-written ``nn.Module`` models used by the lumos_fx tests.

The models are plain PyTorch: nothing here imports lumos_fx. Each entry of
:data:`ZOO` is ``(name, model_factory, input_factory)``:

* ``model_factory()`` builds the model with seeded random weights. BatchNorm
  layers get random affine parameters and running statistics, so eval-mode
  BatchNorm is not an identity (a pruning bug that mixes up channels shows).
* ``input_factory(batch, seed=0)`` returns one input tensor of that batch size.

Sizes are tiny so every test runs in well under a second on a CPU.

Example::

    >>> from tests.models.zoo import ZOO
    >>> name, make_model, make_input = ZOO[0]
    >>> make_model()(make_input(4)).shape
    torch.Size([4, 3])
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def _randn(*shape, seed: int = 0) -> torch.Tensor:
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed))


def randomize_norms(model: nn.Module, seed: int = 0) -> nn.Module:
    """Give every BatchNorm random affine parameters and running statistics."""
    g = torch.Generator().manual_seed(seed + 1000)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.modules.batchnorm._BatchNorm):
                n = m.num_features
                m.weight.copy_(0.5 + torch.rand(n, generator=g))
                m.bias.copy_(0.3 * torch.randn(n, generator=g))
                m.running_mean.copy_(0.2 * torch.randn(n, generator=g))
                m.running_var.copy_(0.5 + torch.rand(n, generator=g))
    return model


# --------------------------------------------------------------------------- MLPs
class MLP(nn.Module):
    """20 -> 32 -> 32 -> 3 with SiLU, ReLU and dropout."""

    def __init__(self, d_in: int = 20, hidden: int = 32, d_out: int = 3):
        super().__init__()
        self.fc1 = nn.Linear(d_in, hidden)
        self.act1 = nn.SiLU()
        self.drop1 = nn.Dropout(0.1)
        self.fc2 = nn.Linear(hidden, hidden)
        self.drop2 = nn.Dropout(0.1)
        self.fc3 = nn.Linear(hidden, d_out)

    def forward(self, x):
        x = self.drop1(self.act1(self.fc1(x)))
        x = self.drop2(F.relu(self.fc2(x)))
        return self.fc3(x)

    @staticmethod
    def make_input(batch: int, seed: int = 0) -> torch.Tensor:
        return _randn(batch, 20, seed=seed)


class InputResidualMLP(nn.Module):
    """``head(x + f(x))`` where ``f`` maps the 12 input features to 12 features.

    The residual ties the model's input feature space to ``f``'s output rows
    and to the head's input columns.
    """

    def __init__(self, d: int = 12, hidden: int = 24, d_out: int = 3):
        super().__init__()
        self.f = nn.Sequential(nn.Linear(d, hidden), nn.ReLU(), nn.Linear(hidden, d))
        self.head = nn.Linear(d, d_out)

    def forward(self, x):
        return self.head(x + self.f(x))

    @staticmethod
    def make_input(batch: int, seed: int = 0) -> torch.Tensor:
        return _randn(batch, 12, seed=seed)


class InputResidualOutMLP(nn.Module):
    """``x + f(x)`` is the model output, so the feature space is pinned; only
    ``f``'s hidden layer can shrink."""

    def __init__(self, d: int = 12, hidden: int = 24):
        super().__init__()
        self.f = nn.Sequential(nn.Linear(d, hidden), nn.Tanh(), nn.Linear(hidden, d))

    def forward(self, x):
        return x + self.f(x)

    @staticmethod
    def make_input(batch: int, seed: int = 0) -> torch.Tensor:
        return _randn(batch, 12, seed=seed)


# --------------------------------------------------------------------------- CNNs
class SmallCNN(nn.Module):
    """Conv2d-BN-ReLU-MaxPool-Conv2d-ReLU-flatten-Linear-ReLU-Linear (NCHW)."""

    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 8, 3, padding=1)
        self.bn1 = nn.BatchNorm2d(8)
        self.pool = nn.MaxPool2d(2)
        self.conv2 = nn.Conv2d(8, 16, 3, padding=1)
        self.fc1 = nn.Linear(16 * 8 * 8, 32)
        self.fc2 = nn.Linear(32, 10)

    def forward(self, x):
        x = self.pool(F.relu(self.bn1(self.conv1(x))))
        x = F.relu(self.conv2(x))
        x = torch.flatten(x, 1)
        x = F.relu(self.fc1(x))
        return self.fc2(x)

    @staticmethod
    def make_input(batch: int, seed: int = 0) -> torch.Tensor:
        return _randn(batch, 3, 16, 16, seed=seed)


class CosmoFlow3D(nn.Module):
    """CosmoFlow-style Conv3d net with a channels-last flatten before the FC."""

    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv3d(2, 8, 3, padding=1)
        self.conv2 = nn.Conv3d(8, 16, 3, padding=1)
        self.pool = nn.AvgPool3d(2)
        self.act = nn.LeakyReLU(0.3)
        self.fc1 = nn.Linear(16 * 2 * 2 * 2, 32)
        self.drop = nn.Dropout(0.2)
        self.fc2 = nn.Linear(32, 4)

    def forward(self, x):
        x = self.pool(self.act(self.conv1(x)))
        x = self.pool(self.act(self.conv2(x)))
        x = x.permute(0, 2, 3, 4, 1).flatten(1)
        x = self.drop(self.act(self.fc1(x)))
        return self.fc2(x)

    @staticmethod
    def make_input(batch: int, seed: int = 0) -> torch.Tensor:
        return _randn(batch, 2, 8, 8, 8, seed=seed)


def _conv_bn_relu(c_in: int, c_out: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(c_in, c_out, 3, padding=1, bias=False),
                         nn.BatchNorm2d(c_out), nn.ReLU(inplace=True))


class VGGAdaptive(nn.Module):
    """VGG-style: (Conv-BN-ReLU)x4 with pooling, AdaptiveAvgPool2d(1), classifier."""

    def __init__(self):
        super().__init__()
        self.features = nn.Sequential(
            _conv_bn_relu(3, 8), _conv_bn_relu(8, 8), nn.MaxPool2d(2),
            _conv_bn_relu(8, 16), _conv_bn_relu(16, 16), nn.MaxPool2d(2),
        )
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Sequential(nn.Linear(16, 16), nn.ReLU(), nn.Dropout(0.5),
                                        nn.Linear(16, 10))

    def forward(self, x):
        x = self.avgpool(self.features(x))
        x = torch.flatten(x, 1)
        return self.classifier(x)

    @staticmethod
    def make_input(batch: int, seed: int = 0) -> torch.Tensor:
        return _randn(batch, 3, 16, 16, seed=seed)


class VGGMean(nn.Module):
    """VGG-style with a global ``x.mean((2, 3))`` instead of a pooling module."""

    def __init__(self):
        super().__init__()
        self.block1 = _conv_bn_relu(3, 8)
        self.block2 = _conv_bn_relu(8, 12)
        self.block3 = _conv_bn_relu(12, 16)
        self.block4 = _conv_bn_relu(16, 16)
        self.fc = nn.Linear(16, 10)

    def forward(self, x):
        x = F.max_pool2d(self.block2(self.block1(x)), 2)
        x = F.max_pool2d(self.block4(self.block3(x)), 2)
        return self.fc(x.mean((2, 3)))

    @staticmethod
    def make_input(batch: int, seed: int = 0) -> torch.Tensor:
        return _randn(batch, 3, 16, 16, seed=seed)


class BasicBlock(nn.Module):
    def __init__(self, c_in: int, c_out: int, stride: int = 1):
        super().__init__()
        self.conv1 = nn.Conv2d(c_in, c_out, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(c_out)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(c_out)
        self.shortcut = None
        if stride != 1 or c_in != c_out:
            self.shortcut = nn.Sequential(nn.Conv2d(c_in, c_out, 1, stride=stride, bias=False),
                                          nn.BatchNorm2d(c_out))

    def forward(self, x):
        identity = x if self.shortcut is None else self.shortcut(x)
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        out = out + identity
        return F.relu(out)


class ResNetTiny(nn.Module):
    """Stem, one identity basic block, one strided block with a 1x1 conv+BN shortcut."""

    def __init__(self):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1, bias=False),
                                  nn.BatchNorm2d(8), nn.ReLU())
        self.layer1 = BasicBlock(8, 8)
        self.layer2 = BasicBlock(8, 16, stride=2)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(16, 10)

    def forward(self, x):
        x = self.layer2(self.layer1(self.stem(x)))
        return self.fc(torch.flatten(self.pool(x), 1))

    @staticmethod
    def make_input(batch: int, seed: int = 0) -> torch.Tensor:
        return _randn(batch, 3, 16, 16, seed=seed)


class DenseLayer(nn.Module):
    def __init__(self, c_in: int, growth: int):
        super().__init__()
        self.bn = nn.BatchNorm2d(c_in)
        self.conv = nn.Conv2d(c_in, growth, 3, padding=1, bias=False)

    def forward(self, x):
        new = self.conv(F.relu(self.bn(x)))
        return torch.cat([x, new], 1)


class DenseNetTiny(nn.Module):
    """DenseNet-style: two growth layers (``torch.cat([x, new], 1)``), then a
    BN-ReLU-1x1 conv transition with pooling."""

    def __init__(self):
        super().__init__()
        self.stem = nn.Conv2d(3, 8, 3, padding=1, bias=False)
        self.dense1 = DenseLayer(8, 4)
        self.dense2 = DenseLayer(12, 4)
        self.trans_bn = nn.BatchNorm2d(16)
        self.trans_conv = nn.Conv2d(16, 8, 1, bias=False)
        self.trans_pool = nn.AvgPool2d(2)
        self.final_bn = nn.BatchNorm2d(8)
        self.fc = nn.Linear(8, 10)

    def forward(self, x):
        x = self.dense2(self.dense1(self.stem(x)))
        x = self.trans_pool(self.trans_conv(F.relu(self.trans_bn(x))))
        x = F.relu(self.final_bn(x)).mean((2, 3))
        return self.fc(x)

    @staticmethod
    def make_input(batch: int, seed: int = 0) -> torch.Tensor:
        return _randn(batch, 3, 8, 8, seed=seed)


class ViewCNN(nn.Module):
    """Flattens with ``x.view(x.size(0), -1)``."""

    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 6, 3, stride=2, padding=1)
        self.conv2 = nn.Conv2d(6, 12, 3, padding=1)
        self.fc1 = nn.Linear(12 * 4 * 4, 16)
        self.fc2 = nn.Linear(16, 4)

    def forward(self, x):
        x = F.relu(self.conv2(F.relu(self.conv1(x))))
        x = x.view(x.size(0), -1)
        return self.fc2(F.relu(self.fc1(x)))

    @staticmethod
    def make_input(batch: int, seed: int = 0) -> torch.Tensor:
        return _randn(batch, 3, 8, 8, seed=seed)


class ReshapeConstCNN(nn.Module):
    """Flattens with a hard-coded ``x.reshape(-1, 16 * 4 * 4)`` (LeNet style)."""

    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 8, 3, padding=1)
        self.conv2 = nn.Conv2d(8, 16, 3, padding=1)
        self.fc1 = nn.Linear(16 * 4 * 4, 24)
        self.fc2 = nn.Linear(24, 5)

    def forward(self, x):
        x = F.max_pool2d(F.relu(self.conv1(x)), 2)
        x = F.relu(self.conv2(x))
        x = x.reshape(-1, 16 * 4 * 4)
        return self.fc2(F.relu(self.fc1(x)))

    @staticmethod
    def make_input(batch: int, seed: int = 0) -> torch.Tensor:
        return _randn(batch, 3, 8, 8, seed=seed)


class FeatureMapCNN(nn.Module):
    """Output is a feature map ``(B, 4, H, W)``: the last conv's channels are pinned."""

    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 8, 3, padding=1)
        self.bn1 = nn.BatchNorm2d(8)
        self.conv2 = nn.Conv2d(8, 8, 3, padding=1)
        self.head = nn.Conv2d(8, 4, 1)

    def forward(self, x):
        x = F.relu(self.bn1(self.conv1(x)))
        x = F.relu(self.conv2(x))
        return self.head(x)

    @staticmethod
    def make_input(batch: int, seed: int = 0) -> torch.Tensor:
        return _randn(batch, 3, 12, 12, seed=seed)


def _factory(cls):
    def make():
        torch.manual_seed(0)
        return randomize_norms(cls())
    make.__name__ = f"make_{cls.__name__}"
    return make


_CLASSES = {
    "mlp": MLP,
    "mlp_input_residual": InputResidualMLP,
    "mlp_input_residual_out": InputResidualOutMLP,
    "cnn": SmallCNN,
    "cosmoflow3d": CosmoFlow3D,
    "vgg_adaptive": VGGAdaptive,
    "vgg_mean": VGGMean,
    "resnet": ResNetTiny,
    "densenet": DenseNetTiny,
    "view_cnn": ViewCNN,
    "reshape_const_cnn": ReshapeConstCNN,
    "feature_map_cnn": FeatureMapCNN,
}

#: ``[(name, model_factory, input_factory), ...]``
ZOO = [(name, _factory(cls), cls.make_input) for name, cls in _CLASSES.items()]
ZOO_IDS = [name for name, _, _ in ZOO]
