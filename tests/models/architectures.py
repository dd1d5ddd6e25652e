"""Hand-written architectures (small versions of well-known families).

Plain PyTorch, nothing here imports lumos_fx. :data:`ARCHITECTURES` maps a
name to ``(model_factory, input_factory)`` like the zoo: ``model_factory()``
builds a seeded model with random BatchNorm statistics, ``input_factory(batch,
seed)`` returns an input.

Example::

    >>> from tests.models.architectures import ARCHITECTURES
    >>> make_model, make_input = ARCHITECTURES["unet"]
    >>> make_model()(make_input(2)).shape
    torch.Size([2, 2, 16, 16])
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from tests.models.zoo import _factory, _randn


def conv_bn_act(c_in: int, c_out: int, k: int = 3, stride: int = 1, groups: int = 1,
                act: type[nn.Module] = nn.ReLU) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(c_in, c_out, k, stride, k // 2, groups=groups, bias=False),
                         nn.BatchNorm2d(c_out), act())


def _image(c: int, h: int):
    def make_input(batch: int, seed: int = 0) -> torch.Tensor:
        return _randn(batch, c, h, h, seed=seed)
    return make_input


# --------------------------------------------------------------------------- UNet
class UNet(nn.Module):
    """Two-level UNet: skip concats, ConvTranspose2d upsampling, feature-map output."""

    def __init__(self, c_in: int = 3, n_classes: int = 2, w: int = 8):
        super().__init__()
        self.enc1 = nn.Sequential(conv_bn_act(c_in, w), conv_bn_act(w, w))
        self.enc2 = nn.Sequential(conv_bn_act(w, 2 * w), conv_bn_act(2 * w, 2 * w))
        self.mid = nn.Sequential(conv_bn_act(2 * w, 4 * w), conv_bn_act(4 * w, 4 * w))
        self.up2 = nn.ConvTranspose2d(4 * w, 2 * w, 2, stride=2)
        self.dec2 = nn.Sequential(conv_bn_act(4 * w, 2 * w), conv_bn_act(2 * w, 2 * w))
        self.up1 = nn.ConvTranspose2d(2 * w, w, 2, stride=2)
        self.dec1 = nn.Sequential(conv_bn_act(2 * w, w), conv_bn_act(w, w))
        self.out = nn.Conv2d(w, n_classes, 1)

    def forward(self, x):
        e1 = self.enc1(x)
        e2 = self.enc2(F.max_pool2d(e1, 2))
        m = self.mid(F.max_pool2d(e2, 2))
        d2 = self.dec2(torch.cat([self.up2(m), e2], dim=1))
        d1 = self.dec1(torch.cat([self.up1(d2), e1], dim=1))
        return self.out(d1)

    make_input = staticmethod(_image(3, 16))


class EncoderDecoder(nn.Module):
    """Strided-conv encoder, bottleneck Linear, interpolate + conv decoder (autoencoder)."""

    def __init__(self):
        super().__init__()
        self.enc = nn.Sequential(conv_bn_act(3, 8, stride=2), conv_bn_act(8, 16, stride=2))
        self.to_code = nn.Linear(16 * 4 * 4, 12)
        self.from_code = nn.Linear(12, 16 * 4 * 4)
        self.dec1 = conv_bn_act(16, 8, act=nn.SiLU)
        self.dec2 = nn.Conv2d(8, 3, 3, padding=1)

    def forward(self, x):
        h = self.enc(x)
        code = torch.tanh(self.to_code(h.flatten(1)))
        h = self.from_code(code).view(-1, 16, 4, 4)
        h = self.dec1(F.interpolate(h, scale_factor=2, mode="nearest"))
        return self.dec2(F.interpolate(h, scale_factor=2, mode="bilinear", align_corners=False))

    make_input = staticmethod(_image(3, 16))


# --------------------------------------------------------------------------- MobileNet
class SqueezeExcite(nn.Module):
    def __init__(self, c: int, r: int):
        super().__init__()
        self.fc1 = nn.Conv2d(c, r, 1)
        self.fc2 = nn.Conv2d(r, c, 1)

    def forward(self, x):
        s = F.adaptive_avg_pool2d(x, 1)
        return x * F.hardsigmoid(self.fc2(F.relu(self.fc1(s))))


class InvertedResidual(nn.Module):
    """MobileNetV2/V3 block: 1x1 expand, depthwise, [SE], 1x1 project; residual if shapes match."""

    def __init__(self, c_in: int, c_out: int, expand: int, stride: int = 1, se: bool = False,
                 act: type[nn.Module] = nn.ReLU6):
        super().__init__()
        hidden = c_in * expand
        self.use_res = stride == 1 and c_in == c_out
        self.expand = conv_bn_act(c_in, hidden, 1, act=act)
        self.dw = conv_bn_act(hidden, hidden, 3, stride, groups=hidden, act=act)
        self.se = SqueezeExcite(hidden, max(2, hidden // 4)) if se else nn.Identity()
        self.project = nn.Sequential(nn.Conv2d(hidden, c_out, 1, bias=False), nn.BatchNorm2d(c_out))

    def forward(self, x):
        out = self.project(self.se(self.dw(self.expand(x))))
        return x + out if self.use_res else out


class MobileNetV2Tiny(nn.Module):
    def __init__(self):
        super().__init__()
        self.stem = conv_bn_act(3, 8, stride=2, act=nn.ReLU6)
        self.blocks = nn.Sequential(InvertedResidual(8, 8, 2), InvertedResidual(8, 12, 3, stride=2),
                                    InvertedResidual(12, 12, 2))
        self.last = conv_bn_act(12, 24, 1, act=nn.ReLU6)
        self.fc = nn.Linear(24, 5)

    def forward(self, x):
        x = self.last(self.blocks(self.stem(x)))
        return self.fc(torch.flatten(F.adaptive_avg_pool2d(x, 1), 1))

    make_input = staticmethod(_image(3, 16))


class MobileNetV3Tiny(nn.Module):
    """Hardswish + SE inverted residuals, a Linear-Hardswish-Dropout-Linear classifier."""

    def __init__(self):
        super().__init__()
        self.stem = conv_bn_act(3, 8, stride=2, act=nn.Hardswish)
        self.blocks = nn.Sequential(
            InvertedResidual(8, 8, 2, se=True, act=nn.ReLU),
            InvertedResidual(8, 12, 3, stride=2, se=True, act=nn.Hardswish),
            InvertedResidual(12, 12, 3, se=True, act=nn.Hardswish))
        self.last = conv_bn_act(12, 24, 1, act=nn.Hardswish)
        self.classifier = nn.Sequential(nn.Linear(24, 16), nn.Hardswish(), nn.Dropout(0.2),
                                        nn.Linear(16, 5))

    def forward(self, x):
        x = self.last(self.blocks(self.stem(x)))
        return self.classifier(x.mean((2, 3)))

    make_input = staticmethod(_image(3, 16))


# --------------------------------------------------------------------------- Inception
class InceptionBlock(nn.Module):
    def __init__(self, c_in: int):
        super().__init__()
        self.b1 = conv_bn_act(c_in, 6, 1)
        self.b3 = nn.Sequential(conv_bn_act(c_in, 4, 1), conv_bn_act(4, 6, 3))
        self.b5 = nn.Sequential(conv_bn_act(c_in, 4, 1), conv_bn_act(4, 4, 3), conv_bn_act(4, 4, 3))
        self.pool = conv_bn_act(c_in, 4, 1)

    def forward(self, x):
        p = self.pool(F.max_pool2d(x, 3, stride=1, padding=1))
        return torch.cat([self.b1(x), self.b3(x), self.b5(x), p], 1)


class InceptionTiny(nn.Module):
    def __init__(self):
        super().__init__()
        self.stem = conv_bn_act(3, 8)
        self.inc1 = InceptionBlock(8)
        self.inc2 = InceptionBlock(20)
        self.fc = nn.Linear(20, 4)

    def forward(self, x):
        x = self.inc2(F.max_pool2d(self.inc1(self.stem(x)), 2))
        return self.fc(F.adaptive_avg_pool2d(x, 1).flatten(1))

    make_input = staticmethod(_image(3, 12))


# --------------------------------------------------------------------------- ShuffleNet
def channel_shuffle(x, groups: int):
    b, c, h, w = x.size()
    x = x.view(b, groups, c // groups, h, w).transpose(1, 2).contiguous()
    return x.view(b, c, h, w)


class ShuffleUnit(nn.Module):
    """ShuffleNetV2 unit (stride 1): split channels in half, transform one half, cat, shuffle."""

    def __init__(self, c: int):
        super().__init__()
        half = c // 2
        self.branch = nn.Sequential(
            conv_bn_act(half, half, 1),
            nn.Conv2d(half, half, 3, padding=1, groups=half, bias=False), nn.BatchNorm2d(half),
            conv_bn_act(half, half, 1))

    def forward(self, x):
        a, b = x.chunk(2, dim=1)
        return channel_shuffle(torch.cat([a, self.branch(b)], 1), 2)


class ShuffleNetTiny(nn.Module):
    def __init__(self):
        super().__init__()
        self.stem = conv_bn_act(3, 8)
        self.units = nn.Sequential(ShuffleUnit(8), ShuffleUnit(8))
        self.conv = conv_bn_act(8, 16, 1)
        self.fc = nn.Linear(16, 4)

    def forward(self, x):
        x = self.conv(self.units(self.stem(x)))
        return self.fc(x.mean((2, 3)))

    make_input = staticmethod(_image(3, 8))


# --------------------------------------------------------------------------- DenseNet
class DenseLayer(nn.Module):
    """BN-ReLU-1x1 bottleneck-BN-ReLU-3x3 growth, concatenated to the input."""

    def __init__(self, c_in: int, growth: int):
        super().__init__()
        self.bn1 = nn.BatchNorm2d(c_in)
        self.conv1 = nn.Conv2d(c_in, 2 * growth, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(2 * growth)
        self.conv2 = nn.Conv2d(2 * growth, growth, 3, padding=1, bias=False)

    def forward(self, x):
        new = self.conv2(F.relu(self.bn2(self.conv1(F.relu(self.bn1(x))))))
        return torch.cat([x, new], 1)


class DenseNetGrowth(nn.Module):
    """Three growth layers, a transition, three more, classifier."""

    def __init__(self, growth: int = 4):
        super().__init__()
        self.stem = nn.Conv2d(3, 8, 3, padding=1, bias=False)
        c = 8
        layers = []
        for _ in range(3):
            layers.append(DenseLayer(c, growth))
            c += growth
        self.block1 = nn.Sequential(*layers)
        self.trans = nn.Sequential(nn.BatchNorm2d(c), nn.ReLU(), nn.Conv2d(c, c // 2, 1, bias=False),
                                   nn.AvgPool2d(2))
        c //= 2
        layers = []
        for _ in range(3):
            layers.append(DenseLayer(c, growth))
            c += growth
        self.block2 = nn.Sequential(*layers)
        self.norm = nn.BatchNorm2d(c)
        self.fc = nn.Linear(c, 6)

    def forward(self, x):
        x = self.block2(self.trans(self.block1(self.stem(x))))
        return self.fc(F.relu(self.norm(x)).mean((2, 3)))

    make_input = staticmethod(_image(3, 8))


# --------------------------------------------------------------------------- heads
class ChannelsLastHead(nn.Module):
    """Conv features flattened channels-last (``permute(0, 2, 3, 1).reshape(B, -1)``) into a Linear."""

    def __init__(self):
        super().__init__()
        self.features = nn.Sequential(conv_bn_act(3, 8), nn.MaxPool2d(2), conv_bn_act(8, 12),
                                      nn.MaxPool2d(2))
        self.fc1 = nn.Linear(12 * 3 * 3, 16)
        self.fc2 = nn.Linear(16, 3)

    def forward(self, x):
        x = self.features(x)
        x = x.permute(0, 2, 3, 1).reshape(x.shape[0], -1)
        return self.fc2(F.gelu(self.fc1(x)))

    make_input = staticmethod(_image(3, 12))


# --------------------------------------------------------------------------- residuals
class BranchBlock(nn.Module):
    """``relu(x + bn2(conv2(relu(bn1(conv1(x))))))``: ``conv1``'s channels are internal."""

    def __init__(self, c: int, hidden: int):
        super().__init__()
        self.conv1 = nn.Conv2d(c, hidden, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(hidden)
        self.conv2 = nn.Conv2d(hidden, c, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(c)

    def forward(self, x):
        return F.relu(x + self.bn2(self.conv2(F.relu(self.bn1(self.conv1(x))))))


class ResidualBranchNet(nn.Module):
    """Stem, two residual blocks (the test closes ``block1``'s internal group), head."""

    def __init__(self):
        super().__init__()
        self.stem = conv_bn_act(3, 8)
        self.block1 = BranchBlock(8, 12)
        self.block2 = BranchBlock(8, 12)
        self.fc = nn.Linear(8, 4)

    def forward(self, x):
        x = self.block2(self.block1(self.stem(x)))
        return self.fc(x.mean((2, 3)))

    make_input = staticmethod(_image(3, 8))


class InputResidualCNN(nn.Module):
    """``x + f(x)`` on the model input (3 channels), then a conv net on top."""

    def __init__(self):
        super().__init__()
        self.f = nn.Sequential(conv_bn_act(3, 8), nn.Conv2d(8, 3, 3, padding=1))
        self.g = nn.Sequential(conv_bn_act(3, 8), nn.Conv2d(8, 3, 1))
        self.body = conv_bn_act(3, 12)
        self.fc = nn.Linear(12, 4)

    def forward(self, x):
        x = x + self.f(x)
        x = x + self.g(x)
        return self.fc(self.body(x).mean((2, 3)))

    make_input = staticmethod(_image(3, 8))


class FeatureMapNet(nn.Module):
    """Output is a feature map ``(B, 5, H, W)`` after a residual stage: output channels stay."""

    def __init__(self):
        super().__init__()
        self.stem = conv_bn_act(3, 8)
        self.block = BranchBlock(8, 8)
        self.head = nn.Conv2d(8, 5, 1)

    def forward(self, x):
        return self.head(self.block(self.stem(x)))

    make_input = staticmethod(_image(3, 8))


_CLASSES = {
    "unet": UNet,
    "encoder_decoder": EncoderDecoder,
    "mobilenet_v2": MobileNetV2Tiny,
    "mobilenet_v3": MobileNetV3Tiny,
    "inception": InceptionTiny,
    "shufflenet": ShuffleNetTiny,
    "densenet_growth": DenseNetGrowth,
    "channels_last_head": ChannelsLastHead,
    "residual_branch": ResidualBranchNet,
    "input_residual_cnn": InputResidualCNN,
    "feature_map": FeatureMapNet,
}

#: ``name -> (model_factory, input_factory)``
ARCHITECTURES = {name: (_factory(cls), cls.make_input) for name, cls in _CLASSES.items()}

#: architectures whose output is a feature map (the output channels must stay)
FEATURE_MAP_OUTPUTS = ("unet", "encoder_decoder", "feature_map")
