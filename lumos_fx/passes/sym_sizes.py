"""Dynamic sizes rebuilt from the model inputs' sizes.

Capture records every dynamic size as a sympy string over export's symbols
(``node.meta["lumos"]["symbolic"]``): a model input's dims carry single symbols
(``s0`` the batch, ``s1`` the sequence length), and sizes computed from them are
expressions: ``s0*s1`` for ``nn.MultiheadAttention``'s ``(tokens * batch, C)``
rows, ``s1 + 1`` after a class token. When a branch is replaced by a constant
(:func:`lumos_fx.passes.shrink.shrink`) the constant is expanded to the branch's
sizes, so they must be computed again from the inputs: :func:`parse` accepts a
polynomial with integer coefficients in the inputs' symbols (anything else,
such as a ``//`` or ``Max``, gives None and the branch stays), and :func:`emit`
writes ``sym_size`` reads of the inputs combined with ``*`` and ``+``.

Example::

    >>> import torch
    >>> from torch import fx
    >>> from lumos_fx.passes.sym_sizes import emit, parse
    >>> graph = fx.Graph()
    >>> x = graph.placeholder("x")
    >>> symbols = {"s0": (x, 0), "s1": (x, 1)}
    >>> expr = parse("s0*s1 + 2*s0", symbols)
    >>> _ = graph.output(emit(graph, expr, symbols))
    >>> fx.GraphModule(torch.nn.Module(), graph)(torch.zeros(3, 5))
    21
    >>> parse("((s0//2))", symbols) is None and parse("s7", symbols) is None
    True
"""
from __future__ import annotations

import operator

import sympy
import torch
from torch import fx

aten = torch.ops.aten


def input_symbols(graph: fx.Graph) -> dict[str, tuple[fx.Node, int]]:
    """``{symbol: (placeholder, dim)}`` for every model input dim with a dynamic size of
    its own (the first input that has a symbol wins)."""
    symbols = {}
    for placeholder in (n for n in graph.nodes if n.op == "placeholder"):
        for d, expr in sorted(placeholder.meta.get("lumos", {}).get("symbolic", {}).items()):
            if expr.isidentifier():
                symbols.setdefault(expr, (placeholder, d))
    return symbols


def parse(expr: str, symbols: dict) -> sympy.Poly | None:
    """``expr`` as a polynomial with integer coefficients in ``symbols``, else None."""
    names = {name: sympy.Symbol(name, integer=True, positive=True) for name in symbols}
    try:
        value = sympy.sympify(expr, locals=names)
    except (sympy.SympifyError, SyntaxError, TypeError):
        return None
    free = getattr(value, "free_symbols", None)
    if free is None or not free <= set(names.values()):
        return None
    gens = sorted(free, key=str) or [next(iter(names.values()), sympy.Symbol("_"))]
    if not value.is_polynomial(*gens):
        return None
    poly = sympy.Poly(value, *gens)
    if not all(coefficient.is_integer for coefficient in poly.coeffs()):
        return None
    return poly


def emit(graph: fx.Graph, poly: sympy.Poly, symbols: dict):
    """Nodes (inserted at the graph's insertion point) computing ``poly`` from the
    inputs' sizes; an ``int`` when it is constant."""
    reads = {}

    def read(name: str) -> fx.Node:
        if name not in reads:
            reads[name] = graph.call_function(aten.sym_size.int, symbols[name])
        return reads[name]

    total = None
    for powers, coefficient in poly.terms():
        term = None
        for gen, power in zip(poly.gens, powers):
            for _ in range(power):
                term = read(str(gen)) if term is None else \
                    graph.call_function(operator.mul, (term, read(str(gen))))
        coefficient = int(coefficient)
        if term is None:
            term = coefficient
        elif coefficient != 1:
            term = graph.call_function(operator.mul, (term, coefficient))
        total = term if total is None else graph.call_function(operator.add, (total, term))
    return 0 if total is None else total
