"""Building blocks for randomly generated CNNs, described by readable specs.

A *program* is a tuple of block specs (small frozen dataclasses); a
:class:`ProgramNet` builds one ``nn.Module`` per spec and runs them in order on
an NCHW tensor, then a head. Every block's forward takes ``(x, x0)`` where
``x0`` is the model input, so a block can tie a residual to the model input.
Nothing here imports lumos_fx.

The specs cover the channel structures of DESIGN.md section 4: nested
residuals, concatenated branches, split/chunk and recombine, squeeze-and-
excitation, grouped/depthwise/transposed convs, Batch/Group/LayerNorm
(channels-last), channel shuffle, resizing, padding, reductions with
``keepdim``, activations, and flatten/permute heads.

:func:`programs` is a hypothesis strategy for random programs that are valid
by construction (it tracks channels and spatial size while drawing).

Example::

    >>> from tests.models.structures import Conv, Residual, Head, ProgramNet
    >>> net = ProgramNet((Conv(8), Residual((Conv(8, act="silu"),))), Head("pool_linear"))
    >>> net
    ProgramNet[Conv(c=8) | Residual(body=(Conv(c=8, act='silu'),)) || Head(kind='pool_linear')]
    >>> net(net.make_input(2)).shape
    torch.Size([2, 3])
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from tests.models.zoo import _randn, randomize_norms

C_IN = 3
H_IN = 8
N_OUT = 3
MAX_H = 16


# --------------------------------------------------------------------------- specs
def _short_repr(self) -> str:
    """Dataclass repr without fields left at their defaults (keeps failures readable)."""
    parts = []
    for f in dataclasses.fields(self):
        value = getattr(self, f.name)
        if f.default is dataclasses.MISSING or value != f.default:
            parts.append(f"{f.name}={value!r}")
    return f"{type(self).__name__}({', '.join(parts)})"


def spec(cls):
    cls = dataclass(frozen=True, repr=False)(cls)
    cls.__repr__ = _short_repr
    return cls


@spec
class Conv:
    """Conv2d(k, stride, groups) [+ BatchNorm] [+ activation]; ``groups=-1`` = depthwise."""
    c: int
    k: int = 3
    stride: int = 1
    groups: int = 1
    bn: bool = False
    act: str = "none"
    bias: bool = True


@spec
class ConvT:
    """ConvTranspose2d: ``up=True`` doubles H (k=2, s=2), else k=3, p=1."""
    c: int
    up: bool = True
    output_padding: bool = False
    bn: bool = False
    act: str = "none"
    groups: int = 1   # -1 = depthwise


@spec
class Residual:
    """``x + body(x)`` (``proj``: the skip goes through a 1x1 conv+BN); ``post`` act after."""
    body: tuple
    proj: bool = False
    post: str = "none"


@spec
class InputSkip:
    """``conv1x1(x) -> C_IN channels, + model input`` (requires H == H_IN), then ``conv1x1 -> c``."""
    c: int


@spec
class Branches:
    """Inception style: every branch runs on ``x``, outputs concatenated on dim 1."""
    branches: tuple
    identity: bool = False  # also concatenate x itself (DenseNet style)


@spec
class SplitMerge:
    """Split channels (``split`` sizes / ``chunk`` / slicing), run a body per piece, recombine."""
    how: str            # "split" | "chunk" | "slice"
    sizes: tuple        # piece sizes along dim 1
    bodies: tuple       # one program per piece (may be empty = identity)
    merge: str = "cat"  # "cat" | "add" | "cat_reversed"


@spec
class SE:
    """Squeeze-and-excitation ``x * gate(fc(pool(x)))``."""
    r: int
    how: str = "conv"        # "conv" (1x1 convs, keepdim) | "linear_view" | "linear_none"
    gate: str = "sigmoid"    # "sigmoid" | "hardsigmoid"


@spec
class Norm:
    kind: str   # "bn" | "gn" | "ln_cl" (LayerNorm over channels-last) | "in"
    groups: int = 1


@spec
class Shuffle:
    """Channel shuffle ``view(B, g, C/g, H, W).transpose(1, 2).reshape(B, C, H, W)``."""
    g: int
    literal: bool = False   # sizes written as Python ints instead of read from x.size()


@spec
class Resize:
    kind: str   # "nearest" | "bilinear" | "upsample_module" | "maxpool" | "avgpool" | "adaptive"


@spec
class Pad:
    """``spatial``: F.pad H/W by 1 then a valid 3x3 conv; ``channels``: F.pad adds zero channels."""
    where: str = "spatial"
    c: int = 0
    amount: int = 1


@spec
class Reduce:
    """``x OP red(x, dims, keepdim=True)``."""
    op: str        # "mean" | "sum" | "amax"
    dims: str      # "channel" | "spatial"
    combine: str   # "add" | "sub" | "mul"


@spec
class Act:
    name: str


@spec
class Head:
    """``pool_linear``: mean(2,3)->Linear; ``flatten``: NCHW flatten->Linear; ``flatten_cl``:
    permute(0,2,3,1).flatten(1)->Linear; ``view``: x.view(x.size(0), -1)->Linear;
    ``reshape_cl``: permute + reshape(B, -1); ``feature_map``: 1x1 conv, output is NCHW."""
    kind: str


ACTS = ("relu", "silu", "hardswish", "gelu", "relu6", "leaky_relu", "mish", "elu",
        "hardsigmoid", "tanh", "f_hardswish", "swish_manual", "prelu")


# --------------------------------------------------------------------------- modules
def make_act(name: str, c: int) -> nn.Module:
    table = {
        "none": nn.Identity, "relu": nn.ReLU, "silu": nn.SiLU, "hardswish": nn.Hardswish,
        "gelu": nn.GELU, "relu6": nn.ReLU6, "leaky_relu": lambda: nn.LeakyReLU(0.1),
        "mish": nn.Mish, "elu": nn.ELU, "hardsigmoid": nn.Hardsigmoid, "tanh": nn.Tanh,
        "f_hardswish": _FHardswish, "swish_manual": _ManualSwish,
        "prelu": lambda: nn.PReLU(c, init=0.2),
    }
    return table[name]()


class _FHardswish(nn.Module):
    def forward(self, x):
        return F.hardswish(x)


class _ManualSwish(nn.Module):
    def forward(self, x):
        return x * torch.sigmoid(x)


class Block(nn.Module):
    """Base: holds its spec, ``forward(x, x0)``."""

    def __init__(self, spec_):
        super().__init__()
        self.spec = spec_

    def extra_repr(self) -> str:
        return repr(self.spec)


class ConvBlock(Block):
    def __init__(self, s: Conv, c_in: int):
        super().__init__(s)
        groups = c_in if s.groups == -1 else s.groups
        self.conv = nn.Conv2d(c_in, s.c, s.k, stride=s.stride, padding=s.k // 2, groups=groups,
                              bias=s.bias)
        self.bn = nn.BatchNorm2d(s.c) if s.bn else nn.Identity()
        self.act = make_act(s.act, s.c)

    def forward(self, x, x0):
        return self.act(self.bn(self.conv(x)))


class ConvTBlock(Block):
    def __init__(self, s: ConvT, c_in: int):
        super().__init__(s)
        g = c_in if s.groups == -1 else s.groups
        if s.up:
            self.conv = nn.ConvTranspose2d(c_in, s.c, 2, stride=2, groups=g)
        elif s.output_padding:
            self.conv = nn.ConvTranspose2d(c_in, s.c, 3, stride=2, padding=1, output_padding=1,
                                           groups=g)
        else:
            self.conv = nn.ConvTranspose2d(c_in, s.c, 3, padding=1, groups=g)
        self.bn = nn.BatchNorm2d(s.c) if s.bn else nn.Identity()
        self.act = make_act(s.act, s.c)

    def forward(self, x, x0):
        return self.act(self.bn(self.conv(x)))


class Sequence(nn.Module):
    """Runs a program (tuple of specs) on ``(x, x0)``."""

    def __init__(self, program: tuple, c: int):
        super().__init__()
        self.blocks = nn.ModuleList()
        for s in program:
            block, c = build_block(s, c)
            self.blocks.append(block)
        self.c_out = c

    def forward(self, x, x0):
        for block in self.blocks:
            x = block(x, x0)
        return x


class ResidualBlock(Block):
    def __init__(self, s: Residual, c_in: int):
        super().__init__(s)
        self.body = Sequence(s.body, c_in)
        assert self.body.c_out == c_in, s
        self.proj = (nn.Sequential(nn.Conv2d(c_in, c_in, 1, bias=False), nn.BatchNorm2d(c_in))
                     if s.proj else nn.Identity())
        self.post = make_act(s.post, c_in)

    def forward(self, x, x0):
        return self.post(self.proj(x) + self.body(x, x0))


class InputSkipBlock(Block):
    def __init__(self, s: InputSkip, c_in: int):
        super().__init__(s)
        self.to_input = nn.Conv2d(c_in, C_IN, 1)
        self.out = nn.Conv2d(C_IN, s.c, 1)

    def forward(self, x, x0):
        return self.out(F.relu(self.to_input(x) + x0))


class BranchesBlock(Block):
    def __init__(self, s: Branches, c_in: int):
        super().__init__(s)
        self.branches = nn.ModuleList(Sequence(b, c_in) for b in s.branches)
        self.c_out = sum(b.c_out for b in self.branches) + (c_in if s.identity else 0)

    def forward(self, x, x0):
        outs = [b(x, x0) for b in self.branches]
        if self.spec.identity:
            outs = [x] + outs
        return torch.cat(outs, 1)


class SplitMergeBlock(Block):
    def __init__(self, s: SplitMerge, c_in: int):
        super().__init__(s)
        assert sum(s.sizes) == c_in, s
        self.bodies = nn.ModuleList(Sequence(b, size) for b, size in zip(s.bodies, s.sizes))
        outs = [b.c_out for b in self.bodies]
        self.c_out = outs[0] if s.merge == "add" else sum(outs)

    def forward(self, x, x0):
        s = self.spec
        if s.how == "split":
            pieces = torch.split(x, list(s.sizes), dim=1)
        elif s.how == "chunk":
            pieces = x.chunk(len(s.sizes), dim=1)
        else:
            bounds = [0]
            for size in s.sizes:
                bounds.append(bounds[-1] + size)
            pieces = [x[:, a:b] for a, b in zip(bounds, bounds[1:])]
        outs = [body(pieces[i], x0) for i, body in enumerate(self.bodies)]  # fx: no zip
        if s.merge == "add":
            out = outs[0]
            for o in outs[1:]:
                out = out + o
            return out
        if s.merge == "cat_reversed":
            outs = outs[::-1]
        return torch.cat(outs, dim=1)


class SEBlock(Block):
    def __init__(self, s: SE, c_in: int):
        super().__init__(s)
        if s.how == "conv":
            self.fc1 = nn.Conv2d(c_in, s.r, 1)
            self.fc2 = nn.Conv2d(s.r, c_in, 1)
        else:
            self.fc1 = nn.Linear(c_in, s.r)
            self.fc2 = nn.Linear(s.r, c_in)
        self.gate = nn.Sigmoid() if s.gate == "sigmoid" else nn.Hardsigmoid()

    def forward(self, x, x0):
        how = self.spec.how
        if how == "conv":
            w = self.fc2(F.relu(self.fc1(x.mean((2, 3), keepdim=True))))
        elif how == "linear_view":
            b, c, _, _ = x.size()
            w = self.fc2(F.relu(self.fc1(F.adaptive_avg_pool2d(x, 1).view(b, c))))
            w = w.view(b, c, 1, 1)
        else:
            w = self.fc2(F.relu(self.fc1(x.mean((2, 3)))))[:, :, None, None]
        return x * self.gate(w)


class NormBlock(Block):
    def __init__(self, s: Norm, c_in: int):
        super().__init__(s)
        if s.kind == "bn":
            self.norm = nn.BatchNorm2d(c_in)
        elif s.kind == "gn":
            self.norm = nn.GroupNorm(s.groups, c_in)
        elif s.kind == "in":
            self.norm = nn.InstanceNorm2d(c_in, affine=True)
        else:
            self.norm = nn.LayerNorm(c_in)

    def forward(self, x, x0):
        if self.spec.kind == "ln_cl":
            return self.norm(x.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)
        return self.norm(x)


class ShuffleBlock(Block):
    def __init__(self, s: Shuffle, c_in: int):
        super().__init__(s)
        self.c = c_in

    def forward(self, x, x0):
        g = self.spec.g
        if self.spec.literal:  # channel counts as Python ints, the rest read from x
            b, h, w = x.size(0), x.size(2), x.size(3)
            x = x.view(b, g, self.c // g, h, w).transpose(1, 2)
            return x.reshape(b, self.c, h, w)
        b, c, h, w = x.size()
        x = x.view(b, g, c // g, h, w).transpose(1, 2)
        return x.reshape(b, c, h, w)


class ResizeBlock(Block):
    def __init__(self, s: Resize, c_in: int):
        super().__init__(s)
        self.up = nn.Upsample(scale_factor=2, mode="nearest") if s.kind == "upsample_module" \
            else None

    def forward(self, x, x0):
        kind = self.spec.kind
        if kind == "nearest":
            return F.interpolate(x, scale_factor=2, mode="nearest")
        if kind == "bilinear":
            return F.interpolate(x, scale_factor=2, mode="bilinear", align_corners=False)
        if kind == "upsample_module":
            return self.up(x)
        if kind == "maxpool":
            return F.max_pool2d(x, 2)
        if kind == "avgpool":
            return F.avg_pool2d(x, 2)
        return F.adaptive_avg_pool2d(x, (x.shape[2] // 2, x.shape[3] // 2))


class PadBlock(Block):
    def __init__(self, s: Pad, c_in: int):
        super().__init__(s)
        if s.where == "spatial":
            self.conv = nn.Conv2d(c_in, s.c, 2 * s.amount + 1)
            self.c_out = s.c
        else:
            self.conv = None
            self.c_out = c_in + 2 * s.amount

    def forward(self, x, x0):
        a = self.spec.amount
        if self.spec.where == "spatial":
            return self.conv(F.pad(x, (a, a, a, a), mode="reflect" if a == 2 else "constant"))
        return F.pad(x, (0, 0, 0, 0, a, a))


class ReduceBlock(Block):
    def __init__(self, s: Reduce, c_in: int):
        super().__init__(s)

    def forward(self, x, x0):
        s = self.spec
        dims = 1 if s.dims == "channel" else (2, 3)
        if s.op == "mean":
            r = x.mean(dims, keepdim=True)
        elif s.op == "sum":
            r = torch.sum(x, dims, keepdim=True)
        else:
            r = x.amax(dims, keepdim=True)
        if s.combine == "add":
            return x + r
        if s.combine == "sub":
            return x - r
        return x * torch.sigmoid(r)


class ActBlock(Block):
    def __init__(self, s: Act, c_in: int):
        super().__init__(s)
        self.act = make_act(s.name, c_in)

    def forward(self, x, x0):
        return self.act(x)


class HeadModule(nn.Module):
    def __init__(self, s: Head, c: int, h: int):
        super().__init__()
        self.spec = s
        if s.kind == "feature_map":
            self.out = nn.Conv2d(c, N_OUT, 1)
        elif s.kind == "pool_linear":
            self.out = nn.Linear(c, N_OUT)
        else:
            self.out = nn.Linear(c * h * h, N_OUT)

    def forward(self, x):
        kind = self.spec.kind
        if kind == "pool_linear":
            x = x.mean((2, 3))
        elif kind == "flatten":
            x = torch.flatten(x, 1)
        elif kind == "flatten_cl":
            x = x.permute(0, 2, 3, 1).flatten(1)
        elif kind == "view":
            x = x.contiguous().view(x.size(0), -1)
        elif kind == "reshape_cl":
            x = x.permute(0, 2, 3, 1).reshape(x.shape[0], -1)
        return self.out(x)


_BUILDERS = {
    Conv: ConvBlock, ConvT: ConvTBlock, Residual: ResidualBlock, InputSkip: InputSkipBlock,
    Branches: BranchesBlock, SplitMerge: SplitMergeBlock, SE: SEBlock, Norm: NormBlock,
    Shuffle: ShuffleBlock, Resize: ResizeBlock, Pad: PadBlock, Reduce: ReduceBlock, Act: ActBlock,
}


def out_channels(s, c: int) -> int:
    if isinstance(s, (Conv, ConvT, InputSkip)):
        return s.c
    if isinstance(s, Branches):
        return sum(_program_channels(b, c) for b in s.branches) + (c if s.identity else 0)
    if isinstance(s, SplitMerge):
        outs = [_program_channels(b, size) for b, size in zip(s.bodies, s.sizes)]
        return outs[0] if s.merge == "add" else sum(outs)
    if isinstance(s, Pad):
        return s.c if s.where == "spatial" else c + 2 * s.amount
    return c


def _program_channels(program, c: int) -> int:
    for s in program:
        c = out_channels(s, c)
    return c


def build_block(s, c_in: int) -> tuple[nn.Module, int]:
    block = _BUILDERS[type(s)](s, c_in)
    return block, out_channels(s, c_in)


def spatial_after(program, h: int) -> int:
    for s in program:
        if isinstance(s, Conv) and s.stride == 2:
            h = (h + 1) // 2
        elif isinstance(s, ConvT) and (s.up or s.output_padding):
            h = 2 * h
        elif isinstance(s, Resize):
            h = 2 * h if s.kind in ("nearest", "bilinear", "upsample_module") else h // 2
    return h


class ProgramNet(nn.Module):
    """A model built from a program of block specs and a head (float32; call ``.double()``)."""

    def __init__(self, program: tuple, head: Head, seed: int = 0):
        super().__init__()
        torch.manual_seed(seed)
        self.program, self.head_spec = tuple(program), head
        self.body = Sequence(self.program, C_IN)
        self.head = HeadModule(head, self.body.c_out, spatial_after(self.program, H_IN))
        randomize_norms(self, seed)
        _randomize_other_norms(self, seed)

    def forward(self, x):
        return self.head(self.body(x, x))

    def __repr__(self) -> str:
        return f"ProgramNet[{' | '.join(map(repr, self.program))} || {self.head_spec!r}]"

    @staticmethod
    def make_input(batch: int, seed: int = 0) -> torch.Tensor:
        return _randn(batch, C_IN, H_IN, H_IN, seed=seed)


def _randomize_other_norms(model: nn.Module, seed: int) -> None:
    """Random affine parameters for GroupNorm/LayerNorm/InstanceNorm (identity by default)."""
    g = torch.Generator().manual_seed(seed + 2000)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, (nn.GroupNorm, nn.LayerNorm, nn.InstanceNorm2d)) and \
                    getattr(m, "weight", None) is not None:
                m.weight.copy_(0.5 + torch.rand(m.weight.shape, generator=g))
                m.bias.copy_(0.3 * torch.randn(m.bias.shape, generator=g))


# --------------------------------------------------------------------------- strategies
BLOCK_KINDS = ("conv", "dwconv", "gconv", "se", "norm", "act", "reduce", "branches", "split",
               "residual", "pad", "shuffle", "convt_same", "convt_up", "resize", "pad_channels",
               "stride", "input_skip")
HEAD_KINDS = ("pool_linear", "flatten", "flatten_cl", "view", "reshape_cl", "feature_map")


def programs(max_blocks: int = 4, max_depth: int = 2, exclude: tuple = ()):
    """Hypothesis strategy: ``(program, head)`` valid for a ``(B, C_IN, H_IN, H_IN)`` input.

    ``exclude``: block kinds (see :data:`BLOCK_KINDS`) and heads (``"head_" + kind``,
    see :data:`HEAD_KINDS`) never to draw, e.g. to look past a known bug.
    """
    from hypothesis import strategies as st

    channels = st.sampled_from((4, 6, 8))
    acts = st.sampled_from(("none",) + ACTS)

    def divisors(c):
        return [g for g in (2, 3, 4) if c % g == 0]

    @st.composite
    def block(draw, c: int, h: int, depth: int, keep_shape: bool):
        """One block spec for input ``(c, h)``; ``keep_shape``: output must be ``(c, h)``."""
        kinds = ["conv", "conv", "dwconv", "gconv", "se", "norm", "act", "reduce", "branches",
                 "split", "residual", "pad", "shuffle", "convt_same"]
        if not keep_shape:
            kinds += ["convt_up", "resize", "pad_channels", "stride", "input_skip"]
        if depth >= max_depth:
            kinds = [k for k in kinds if k not in ("branches", "split", "residual")]
        kinds = [k for k in kinds if k not in exclude]
        kind = draw(st.sampled_from(kinds))
        c_out = c if keep_shape else draw(channels)
        if kind == "conv":
            return Conv(c_out, k=draw(st.sampled_from((1, 3))), bn=draw(st.booleans()),
                        act=draw(acts), bias=draw(st.booleans()))
        if kind == "dwconv":
            mult = 1 if keep_shape else draw(st.sampled_from((1, 1, 2)))
            return Conv(c * mult, groups=-1, bn=draw(st.booleans()), act=draw(acts))
        if kind == "gconv":
            gs = divisors(c)
            if not gs:
                return Conv(c_out, k=1, act=draw(acts))
            g = draw(st.sampled_from(gs))
            c_out = c if keep_shape else g * draw(st.sampled_from((1, 2, 3)))
            return Conv(c_out, groups=g, bn=draw(st.booleans()), act=draw(acts))
        if kind == "se":
            return SE(draw(st.sampled_from((2, 4))),
                      how=draw(st.sampled_from(("conv", "linear_view", "linear_none"))),
                      gate=draw(st.sampled_from(("sigmoid", "hardsigmoid"))))
        if kind == "norm":
            norm = draw(st.sampled_from(("bn", "gn", "ln_cl", "in")))
            if norm == "gn":
                return Norm("gn", draw(st.sampled_from([1] + divisors(c))))
            return Norm(norm)
        if kind == "act":
            return Act(draw(st.sampled_from(ACTS)))
        if kind == "reduce":
            return Reduce(draw(st.sampled_from(("mean", "sum", "amax"))),
                          draw(st.sampled_from(("channel", "spatial"))),
                          draw(st.sampled_from(("add", "sub", "mul"))))
        if kind == "shuffle":
            gs = divisors(c)
            if not gs:
                return Act("relu")
            return Shuffle(draw(st.sampled_from(gs)), literal=draw(st.booleans()))
        if kind == "convt_same":
            groups = draw(st.sampled_from([1, 1, 1, -1] + divisors(c)))
            if groups not in (1, -1):
                c_out = c if keep_shape else groups * draw(st.sampled_from((1, 2)))
            return ConvT(c if groups == -1 else c_out, up=False, bn=draw(st.booleans()),
                         act=draw(acts), groups=groups)
        if kind == "convt_up":
            if h >= MAX_H:
                return ConvT(c_out, up=False)
            return ConvT(c_out, up=draw(st.booleans()), output_padding=True,
                         bn=draw(st.booleans()), act=draw(acts))
        if kind == "resize":
            if h >= MAX_H:
                return Resize(draw(st.sampled_from(("maxpool", "avgpool", "adaptive"))))
            if h <= 4:
                return Resize(draw(st.sampled_from(("nearest", "bilinear", "upsample_module"))))
            return Resize(draw(st.sampled_from(("nearest", "bilinear", "upsample_module",
                                                "maxpool", "avgpool", "adaptive"))))
        if kind == "stride":
            if h <= 4:
                return Conv(c_out, k=1)
            return Conv(c_out, stride=2, bn=draw(st.booleans()), act=draw(acts))
        if kind == "pad":
            return Pad("spatial", c_out, amount=draw(st.sampled_from((1, 2))) if h > 4 else 1)
        if kind == "pad_channels":
            return Pad("channels", amount=draw(st.sampled_from((1, 2))))
        if kind == "input_skip":
            if h != H_IN:
                return Conv(c_out, k=1)
            return InputSkip(c_out)
        if kind == "residual":
            body = draw(sub_program(c, h, depth + 1, keep_shape=True))
            return Residual(body, proj=draw(st.booleans()),
                            post=draw(st.sampled_from(("none", "relu", "hardswish"))))
        if kind == "branches":
            n = draw(st.integers(2, 3))
            branches = tuple(draw(sub_program(c, h, depth + 1, keep_shape=False, fixed_h=True))
                             for _ in range(n))
            result = Branches(branches, identity=draw(st.booleans()))
            if keep_shape:
                return Residual((result, Conv(c, k=1)))
            return result
        if kind == "split":
            how = draw(st.sampled_from(("split", "chunk", "slice")))
            if how == "chunk" or c < 4:
                n = draw(st.sampled_from([k for k in (2, 3) if c % k == 0] or [1]))
                sizes = (c // n,) * n
            else:
                first = draw(st.integers(1, c - 1))
                sizes = (first, c - first)
            merge = draw(st.sampled_from(("cat", "cat_reversed", "add"))) \
                if len(set(sizes)) == 1 else draw(st.sampled_from(("cat", "cat_reversed")))
            bodies = tuple(draw(sub_program(size, h, depth + 1, keep_shape=True))
                           if draw(st.booleans()) else () for size in sizes)
            return SplitMerge(how, sizes, bodies, merge=merge)
        raise AssertionError(kind)

    @st.composite
    def sub_program(draw, c: int, h: int, depth: int, keep_shape: bool, fixed_h: bool = False):
        n = draw(st.integers(1, 2))
        out = []
        cc = c
        for _ in range(n):
            s = draw(block(cc, h, depth, keep_shape=keep_shape or fixed_h))
            if fixed_h and not keep_shape and isinstance(s, Conv) and s.groups == 1 \
                    and draw(st.booleans()):
                s = dataclasses.replace(s, c=draw(channels))
            out.append(s)
            cc = out_channels(s, cc)
        if keep_shape and cc != c:
            out.append(Conv(c, k=1))
        return tuple(out)

    @st.composite
    def top(draw):
        n = draw(st.integers(1, max_blocks))
        program, c, h = [], C_IN, H_IN
        for i in range(n):
            s = draw(block(c, h, 0, keep_shape=False))
            program.append(s)
            c, h = out_channels(s, c), spatial_after((s,), h)
        head = Head(draw(st.sampled_from([k for k in HEAD_KINDS if f"head_{k}" not in exclude])))
        return tuple(program), head

    return top()


# --------------------------------------------------------------------------- catalogue
#: One small model per structure, for the per-structure status table and unit tests.
#: ``name -> (program, head)``; each starts with a conv so the structure sees a
#: prunable producer, and ends in a pooled Linear head unless the structure is the head.
STRUCTURES = {
    "conv_bn_act": ((Conv(8, bn=True, act="hardswish"), Conv(8, act="silu")), Head("pool_linear")),
    "nested_residual": ((Conv(8, bn=True, act="relu"),
                         Residual((Conv(8, bn=True, act="relu"),
                                   Residual((Conv(8, act="relu"), Conv(8))), Conv(8)),
                                  post="relu")), Head("pool_linear")),
    "residual_proj": ((Conv(8), Residual((Conv(6, act="relu"), Conv(8)), proj=True)),
                      Head("pool_linear")),
    "input_skip": ((Conv(8, act="relu"), InputSkip(8)), Head("pool_linear")),
    "branches_cat": ((Conv(8, act="relu"),
                      Branches(((Conv(4, k=1),), (Conv(6, act="relu"), Conv(4)),
                                (Resize("maxpool"), Resize("nearest"), Conv(2, k=1))))),
                     Head("pool_linear")),
    "dense_cat": ((Conv(6, act="relu"), Branches(((Conv(4, act="relu"),),), identity=True),
                   Branches(((Conv(4, act="relu"),),), identity=True), Conv(8, k=1)),
                  Head("pool_linear")),
    "split_cat": ((Conv(8, act="relu"),
                   SplitMerge("split", (3, 5), ((Conv(3, act="relu"),), ())), Conv(8)),
                  Head("pool_linear")),
    "chunk_add": ((Conv(8, act="relu"),
                   SplitMerge("chunk", (4, 4), ((Conv(4, act="relu"),), (Conv(4),)), "add"),
                   Conv(8)), Head("pool_linear")),
    "slice_cat_reversed": ((Conv(8, act="relu"),
                            SplitMerge("slice", (2, 6), ((), (Conv(6),)), "cat_reversed"),
                            Conv(8)), Head("pool_linear")),
    "se_conv": ((Conv(8, act="relu"), SE(4), Conv(8)), Head("pool_linear")),
    "se_linear_view": ((Conv(8, act="relu"), SE(4, how="linear_view"), Conv(8)),
                       Head("pool_linear")),
    "se_linear_none": ((Conv(8, act="relu"), SE(4, how="linear_none", gate="hardsigmoid"),
                        Conv(8)), Head("pool_linear")),
    "grouped_conv": ((Conv(8, act="relu"), Conv(8, groups=2, act="relu"), Conv(8)),
                     Head("pool_linear")),
    "depthwise_conv": ((Conv(8, act="relu"), Conv(8, groups=-1, bn=True, act="relu6"), Conv(8)),
                       Head("pool_linear")),
    "depthwise_mult2": ((Conv(4, act="relu"), Conv(8, groups=-1), Conv(8)), Head("pool_linear")),
    "conv_transpose_up": ((Conv(8, act="relu"), ConvT(6, bn=True, act="relu"), Conv(8)),
                          Head("pool_linear")),
    "conv_transpose_outpad": ((Conv(8, act="relu"), ConvT(6, up=False, output_padding=True),
                               Conv(8)), Head("pool_linear")),
    "conv_transpose_grouped": ((Conv(8, act="relu"), ConvT(8, groups=2), Conv(8)),
                               Head("pool_linear")),
    "conv_transpose_depthwise": ((Conv(8, act="relu"), ConvT(8, up=False, groups=-1), Conv(8)),
                                 Head("pool_linear")),
    "batchnorm": ((Conv(8), Norm("bn"), Act("relu"), Conv(8)), Head("pool_linear")),
    "groupnorm": ((Conv(8), Norm("gn", 2), Act("relu"), Conv(8)), Head("pool_linear")),
    "instancenorm": ((Conv(8), Norm("in"), Act("relu"), Conv(8)), Head("pool_linear")),
    "layernorm_cl": ((Conv(8), Norm("ln_cl"), Act("relu"), Conv(8)), Head("pool_linear")),
    "shuffle": ((Conv(8, act="relu"), Shuffle(2), Conv(8)), Head("pool_linear")),
    "shuffle_literal": ((Conv(8, act="relu"), Shuffle(4, literal=True), Conv(8)),
                        Head("pool_linear")),
    "interpolate_nearest": ((Conv(8, act="relu"), Resize("nearest"), Conv(8)), Head("pool_linear")),
    "interpolate_bilinear": ((Conv(8, act="relu"), Resize("bilinear"), Conv(8)),
                             Head("pool_linear")),
    "upsample_module": ((Conv(8, act="relu"), Resize("upsample_module"), Conv(8)),
                        Head("pool_linear")),
    "adaptive_pool": ((Conv(8, act="relu"), Resize("adaptive"), Conv(8)), Head("pool_linear")),
    "pad_spatial": ((Conv(8, act="relu"), Pad("spatial", 8), Conv(8)), Head("pool_linear")),
    "pad_reflect": ((Conv(8, act="relu"), Pad("spatial", 8, amount=2), Conv(8)),
                    Head("pool_linear")),
    "pad_channels": ((Conv(8, act="relu"), Pad("channels"), Conv(8)), Head("pool_linear")),
    "mean_channel_keepdim": ((Conv(8, act="relu"), Reduce("mean", "channel", "sub"), Conv(8)),
                             Head("pool_linear")),
    "sum_channel_keepdim": ((Conv(8, act="relu"), Reduce("sum", "channel", "add"), Conv(8)),
                            Head("pool_linear")),
    "amax_channel_keepdim": ((Conv(8, act="relu"), Reduce("amax", "channel", "mul"), Conv(8)),
                             Head("pool_linear")),
    "mean_spatial_keepdim": ((Conv(8, act="relu"), Reduce("mean", "spatial", "mul"), Conv(8)),
                             Head("pool_linear")),
    "amax_spatial_keepdim": ((Conv(8, act="relu"), Reduce("amax", "spatial", "sub"), Conv(8)),
                             Head("pool_linear")),
    "prelu": ((Conv(8), Act("prelu"), Conv(8)), Head("pool_linear")),
    "swish_manual": ((Conv(8), Act("swish_manual"), Conv(8)), Head("pool_linear")),
    "head_flatten_nchw": ((Conv(8, act="relu"), Resize("maxpool")), Head("flatten")),
    "head_flatten_cl": ((Conv(8, act="relu"), Resize("maxpool")), Head("flatten_cl")),
    "head_view": ((Conv(8, act="relu"), Resize("maxpool")), Head("view")),
    "head_reshape_cl": ((Conv(8, act="relu"), Resize("maxpool")), Head("reshape_cl")),
    "head_feature_map": ((Conv(8, act="relu"), Conv(8, act="relu")), Head("feature_map")),
}
