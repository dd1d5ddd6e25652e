"""Rules for Fourier transforms and complex views (neural operators such as FNO).

An FFT along non-channel dims (space, time) keeps every channel where it is; an
FFT that mixes a channel dim would change when a channel disappears, so it pins.
``view_as_real`` adds a trailing dim of 2 and ``view_as_complex`` removes it; the
other dims keep their channels.

Example::

    >>> from lumos_fx.rules.spectral import transformed_dims
    >>> transformed_dims(None, rank=3, default=(-1,))     # torch.fft.rfft(x): the last dim
    [2]
"""
from __future__ import annotations

from .registry import REGISTRY, aten, packets


def transformed_dims(dim, rank: int, default=None) -> list[int]:
    dims = default if dim is None else dim
    if dims is None:
        return list(range(rank))
    dims = dims if isinstance(dims, (tuple, list)) else [dims]
    return sorted(d % rank for d in dims)


_ONE_DIM = packets("fft_fft", "fft_ifft", "fft_rfft", "fft_irfft", "fft_hfft", "fft_ihfft")
_TWO_DIM = packets("fft_fft2", "fft_ifft2", "fft_rfft2", "fft_irfft2")
_N_DIM = packets("fft_fftn", "fft_ifftn", "fft_rfftn", "fft_irfftn")


def fft(ctx, node):
    """``fft_rfft(x, n, dim, norm)`` / ``fft_rfft2(x, s, dim, norm)`` / ``fft_rfftn``."""
    x = ctx.of(node.args[0]) or {}
    rank = len(ctx.shape(node.args[0]))
    packet = node.target.overloadpacket
    default = (-1,) if packet in _ONE_DIM else (-2, -1) if packet in _TWO_DIM else None
    if packet in _N_DIM and ctx.arg(node, 1, "s") is not None and ctx.arg(node, 2, "dim") is None:
        default = tuple(range(-len(ctx.arg(node, 1, "s")), 0))
    dims = transformed_dims(ctx.arg(node, 2, "dim"), rank, default)
    for d in dims:
        ctx.pin(x.get(d), f"{node.name}: Fourier transform over a channel dim")
    return {d: lab for d, lab in x.items() if d not in dims}


REGISTRY.add(fft, [*_ONE_DIM, *_TWO_DIM, *_N_DIM])


@REGISTRY.ops(aten.view_as_real.default)
def view_as_real(ctx, node):
    return dict(ctx.of(node.args[0]) or {})


@REGISTRY.ops(aten.view_as_complex.default)
def view_as_complex(ctx, node):
    x = ctx.of(node.args[0]) or {}
    last = len(ctx.shape(node.args[0])) - 1
    ctx.pin(x.get(last), f"{node.name}: view_as_complex of a channel dim")
    return {d: lab for d, lab in x.items() if d != last}
