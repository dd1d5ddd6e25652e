"""Write the physically smaller model (the codegen pass behind ``extract``).

With every gate at its deterministic value (and each weight a layer computes
from parameters alone stored as a parameter first, see
:mod:`lumos_fx.passes.materialize`):

1. each group keeps the channels whose gate is open (a group with every gate
   closed keeps its strongest channel: the gate value 0 folded into the
   consumers makes that exact, and no layer ends up with zero width);
2. gate values fold into the consumer weights they multiply (weightless
   consumers such as a ``sum`` over channels keep a multiplication by constants);
3. every sliced parameter and buffer is cut to the kept positions along its
   labeled dims;
4. ``view``/``reshape`` literals on shrunk dims are rewritten; model inputs get
   an ``index_select`` of the kept features, a ``narrow`` (a view) when they are one
   run, or take only those (``inputs="kept"``);
5. gate nodes go, dead code goes, unused submodules go; the graph is lowered for
   fast eager calls (:mod:`lumos_fx.passes.eager`), and its batch norms follow the
   model's train/eval mode again (:mod:`lumos_fx.passes.train_mode`).

The eval graph of a copy of the gated model is rewritten; the gated model is
not modified.

Example::

    >>> import torch
    >>> import lumos_fx as lumos
    >>> model = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.ReLU(), torch.nn.Linear(8, 2))
    >>> gated = lumos.compile(model, example_inputs=(torch.randn(3, 4),))
    >>> with torch.no_grad():
    ...     lumos.gates(gated)["m0"].log_alpha[:5] = -6.0
    >>> lumos.extract(gated).get_submodule("0").weight.shape
    torch.Size([3, 4])
"""
from __future__ import annotations

import copy
import warnings

import numpy as np
import torch
from torch import fx, nn

from ..capture import BufferTracer
from ..input_guard import InputShapes
from ..rules.context import arg_at
from ..state import state_of, unwrap
from .codegen import rewrite_literals
from .decisions import Decisions
from .eager import lower_for_eager
from .materialize import materialize_weights
from .sym_sizes import emit, input_symbols, parse
from .train_mode import batch_norm_follows_mode

aten = torch.ops.aten


def _get(root: nn.Module, path: str):
    owner, _, name = path.rpartition(".")
    module = root.get_submodule(owner) if owner else root
    return module, name, getattr(module, name)


def _set(module: nn.Module, name: str, old, new: torch.Tensor) -> None:
    if isinstance(old, nn.Parameter):
        setattr(module, name, nn.Parameter(new, requires_grad=old.requires_grad))
    elif name in module._buffers:
        module._buffers[name] = new
    else:
        setattr(module, name, new)


def _pruned_shape(node, decisions) -> list[int]:
    """Shape of ``node``'s output (at the example batch) after every labeled dim shrinks."""
    shape = list(node.meta["tensor_meta"].shape)
    for dim, labels in (node.meta.get("lumos", {}).get("labels") or {}).items():
        shape[dim] = len(decisions.kept(labels))
    return shape


def _fold_gates(gm, state, decisions) -> dict[str, list[int]]:
    """Multiply gate values into consumer weights; drop or constant-fold the other
    gate applications.

    Returns the consumers whose whole input is gated to zero, each with the shape
    of its pruned input (taken now, before other rewrites replace that input).
    """
    folded, silent, rescued, shapes = set(), set(), set(), {}
    nodes = {n.name: n for n in gm.graph.nodes}

    def fold(use, values) -> None:
        # a layer whose whole input is closed outputs a constant and is removed, unless
        # fill_budget kept some of its inputs as capacity: then it stays, with their gate
        # value 0 folded in, for a fine-tune to put to use. Under fill_budget no layer is
        # removed: the budget was filled counting every kept channel, and removing a
        # closed layer would drop the capacity kept upstream of it with it. A closed
        # categorical feature's lookup always goes: fill never reopens its table
        if not values.any() and (use.labels >= 0).all():
            if decisions.capacity(use.labels).any():
                rescued.add(use.node)
            elif not decisions.filling or nodes[use.node].target is aten.embedding.default:
                silent.add(use.node)
        source = arg_at(nodes[use.node], use.arg)
        if source.op == "call_module" and str(source.target).startswith("lumos_apply."):
            source = source.args[0]
        shape = shapes.setdefault(use.node, _pruned_shape(source, decisions))
        if use.within is not None:      # a position gate's index_select narrows the input
            shape[use.dim] = len(_positions(use, decisions)[1])
        owner, name, dim = use.fold
        path = f"{owner}.{name}" if owner else name
        if (path, dim, use.within is None) not in folded:     # (nn.Bilinear: two dims)
            module, _, weight = _get(gm, path)
            view = [1] * weight.dim()
            view[dim] = -1
            scale = torch.as_tensor(values, dtype=weight.dtype, device=weight.device)
            _set(module, name, weight, weight.detach() * scale.view(view))
            folded.add((path, dim, use.within is None))

    unscaled = _read_unscaled(gm, state)      # (decided before any rewrite)
    for node in list(gm.graph.nodes):
        meta = node.meta.get("lumos", {})
        if meta.get("use") is None or not str(node.target).startswith("lumos_apply."):
            continue
        use = state.plan.consumers[meta["use"]]
        values = decisions.values(use.labels)
        source = node.args[0]
        if use.fold is not None and use.fold[:2] not in unscaled:
            fold(use, values)
            node.replace_all_uses_with(_select_positions(gm, node, use, decisions)
                                       if use.within is not None else source)
        else:
            kept = decisions.kept(use.labels)
            constants = values[kept]
            if np.all(constants == 1.0):
                node.replace_all_uses_with(source)
            else:
                buffer = f"lumos_scale_{node.name}"
                shape = [1] * node.meta["tensor_meta"].shape.__len__()
                shape[gm.get_submodule(node.target).dim] = -1      # (a weight's: the fold dim)
                gm.register_buffer(buffer, torch.as_tensor(
                    constants, dtype=node.meta["tensor_meta"].dtype).view(shape))
                with gm.graph.inserting_before(node):
                    scale = gm.graph.get_attr(buffer)
                    mul = gm.graph.call_function(aten.mul.Tensor, (source, scale))
                node.replace_all_uses_with(mul)
        gm.graph.erase_node(node)
    if rescued:
        warnings.warn(f"lumos: every input channel of {len(rescued)} layer(s) was closed "
                      f"({', '.join(sorted(rescued)[:3])}{', ...' if len(rescued) > 3 else ''}); "
                      "fill_budget kept channels back for them with gate value 0, so they pass "
                      "no signal until a fine-tune of the extracted model trains them",
                      stacklevel=4)
    return {name: shapes[name] for name in silent}


def _read_unscaled(gm, state) -> set[tuple[str, str]]:
    """The ``(owner, name)`` of weights gates fold into that an embedding also reads: a
    table tied to the output layer. Folding would scale the table's lookups too; the
    gates on such a weight stay a multiply."""
    folds = {}      # weight path -> its (owner, name)
    for use in state.plan.consumers:
        if use.fold is not None:
            owner, name, _ = use.fold
            folds[f"{owner}.{name}" if owner else name] = (owner, name)
    found = set()
    for node in gm.graph.nodes:
        if node.op != "get_attr" or node.target not in folds:
            continue
        if any(user.target is aten.embedding.default for user in node.users):
            found.add(folds[node.target])
    return found


def _positions(use, decisions) -> tuple[np.ndarray, np.ndarray]:
    """Kept channels of a position-gated input, and the kept positions among them."""
    channels = decisions.kept(use.within)
    return channels, np.intersect1d(channels, decisions.kept(use.labels))


def _select_positions(gm, node, use, decisions):
    """Drop closed single positions of kept channels with an ``index_select``."""
    channels, both = _positions(use, decisions)
    if len(both) == len(channels):
        return node.args[0]
    buffer = f"lumos_positions_{node.name}"
    gm.register_buffer(buffer, torch.as_tensor(np.searchsorted(channels, both), dtype=torch.long))
    with gm.graph.inserting_before(node):
        index = gm.graph.get_attr(buffer)
        return gm.graph.call_function(aten.index_select.default, (node.args[0], use.dim, index))


def _constant_of(gm, node, shape):
    """``node``'s output for an all-zero first input of ``shape``, or None when its other
    arguments are not parameters (then the branch stays)."""
    if not isinstance(node.args[0], fx.Node):
        return None
    env = {}
    for value in node.all_input_nodes[1:]:
        if value.op != "get_attr":
            return None
        env[value] = _get(gm, value.target)[2]
    zeros = torch.zeros(*shape)
    reference = next(iter(env.values()), None)
    if reference is not None:
        zeros = zeros.to(device=reference.device, dtype=reference.dtype)
    args = fx.node.map_arg(node.args[1:], lambda v: env[v])
    kwargs = fx.node.map_arg(node.kwargs, lambda v: env[v])
    with torch.no_grad():
        return node.target(zeros, *args, **kwargs)


def _drop_table(gm, node) -> None:
    """``embedding(table, idx)`` of a closed categorical feature reads nothing: zeros of
    shape ``idx.shape + (kept width,)``; the (now empty) table goes with the lookup."""
    table, indices = node.args[0], node.args[1]
    width = _get(gm, table.target)[2].shape[1]
    rank = len(indices.meta["tensor_meta"].shape)
    graph = gm.graph
    with graph.inserting_before(node):
        sizes = [graph.call_function(aten.sym_size.int, (indices, d)) for d in range(rank)]
        zeros = graph.call_function(aten.new_zeros.default, (table, [*sizes, width]))
    node.replace_all_uses_with(zeros)
    graph.erase_node(node)


def _symbolic_sources(gm, node) -> list | None:
    """For each dim of ``node``'s output: its dynamic size as a polynomial in the model
    inputs' dynamic sizes (batch, sequence length; their products such as the ``(N*B,
    C)`` rows of ``nn.MultiheadAttention``, or ``N + 1`` after a class token; recorded
    at capture), or None for a static size; None when a dynamic size is no such
    polynomial."""
    symbols = input_symbols(gm.graph)
    symbolic = node.meta.get("lumos", {}).get("symbolic", {})
    sources = [parse(symbolic[d], symbols) if d in symbolic else None
               for d in range(len(node.meta["tensor_meta"].shape))]
    if any(d in symbolic and src is None for d, src in enumerate(sources)):
        return None
    return sources


def _remove_silent_branches(gm, silent: dict[str, list[int]]) -> None:
    """A layer whose whole input is closed outputs a constant (its bias): replace
    it by that constant broadcast to the dynamic sizes (batch, sequence) it computes
    from the model inputs' sizes, so dead-code elimination drops the branch feeding
    it (residual-aware layer removal, paper VII.C). When a dynamic size cannot be
    computed from the inputs' sizes, the layer stays (still exact)."""
    symbols = input_symbols(gm.graph)
    for node in list(gm.graph.nodes):
        if node.name not in silent:
            continue
        if node.meta.get("lumos", {}).get("table_of_feature"):
            _drop_table(gm, node)
            continue
        if not hasattr(node.meta.get("tensor_meta"), "shape"):
            continue        # several outputs (an LSTM cell's h and c): the layer stays
        sources = _symbolic_sources(gm, node)
        if sources is None:
            continue        # a dynamic size not computable from the inputs: the branch stays
        shape = [1 if src is not None else size for src, size in zip(sources, silent[node.name])]
        constant = _constant_of(gm, node, shape)
        if constant is None:
            continue
        buffer = f"lumos_constant_{node.name}"
        gm.register_buffer(buffer, constant)
        graph = gm.graph
        with graph.inserting_before(node):
            value = graph.get_attr(buffer)
            sizes = [emit(graph, src, symbols) if src is not None else -1 for src in sources]
            expanded = graph.call_function(aten.expand.default, (value, sizes))
        node.replace_all_uses_with(expanded)
        graph.erase_node(node)


def _slice_parameters(gm, state, decisions) -> None:
    for spec in state.plan.params.values():
        module, name, tensor = _get(gm, spec.path)
        new = tensor.detach()
        for dim in spec.dims:
            kept = decisions.kept_all(spec.label_sets(dim))
            if len(kept) != new.shape[dim]:
                new = new.index_select(dim, torch.as_tensor(kept, device=new.device))
        if new.shape != tensor.shape:
            _set(module, name, tensor, new.contiguous())


def _select_inputs(gm, state, decisions, mode: str) -> dict[str, list[int]]:
    kept_inputs = {}
    placeholders = {n.target: n for n in gm.graph.nodes if n.op == "placeholder"}
    for name, (dim, labels) in state.plan.inputs.items():
        kept = decisions.kept(labels)
        kept_inputs[name] = kept.tolist()
        if mode == "kept" or len(kept) == len(labels) or name in state.plan.categorical:
            continue    # categorical inputs keep their columns: the graph reads them by index
        node = placeholders[name]
        if kept[-1] - kept[0] + 1 == len(kept):     # one run of features: a view, no copy
            with gm.graph.inserting_after(node):
                select = gm.graph.call_function(aten.narrow.default,
                                                (node, dim, int(kept[0]), len(kept)))
        else:
            buffer = f"lumos_kept_{name}"
            gm.register_buffer(buffer, torch.as_tensor(kept, dtype=torch.long))
            with gm.graph.inserting_after(node):
                index = gm.graph.get_attr(buffer)
            with gm.graph.inserting_after(index):
                select = gm.graph.call_function(aten.index_select.default, (node, dim, index))
        node.replace_all_uses_with(select, delete_user_cb=lambda user: user is not select)
    return kept_inputs


def shrink(gated: nn.Module, inputs: str = "full", round_to: int = 1,
           fill_to: tuple[str, float] | None = None) -> fx.GraphModule:
    """Return the extracted model; ``inputs`` is ``"full"`` or ``"kept"``; channel
    group widths are rounded up to a multiple of ``round_to``; ``fill_to=(metric,
    fraction)`` keeps closed channels back up to that size."""
    state = state_of(gated)
    work = copy.deepcopy(unwrap(gated)).eval()
    decisions = Decisions(work, state, round_to, fill_to)
    gm = work.graph_module(False)
    with torch.no_grad():
        materialize_weights(gm, state.plan.params)
        silent = _fold_gates(gm, state, decisions)
        _slice_parameters(gm, state, decisions)
    _remove_silent_branches(gm, silent)
    rewrite_literals(gm, decisions)
    kept_inputs = _select_inputs(gm, state, decisions, inputs)
    # with inputs="kept" an input's feature dim is as wide as the features kept
    guard = work.__dict__.get("input_shapes") or InputShapes.from_graph(gm)
    guard = guard.freeing({name: [dim] for name, (dim, _) in state.plan.inputs.items()
                           if inputs == "kept"})
    for node in reversed(list(gm.graph.nodes)):   # the gate samples, then the bank
        if node.op == "call_module" and node.target == "lumos_gates":
            for user in list(node.users):
                gm.graph.erase_node(user)
            gm.graph.erase_node(node)
    for node in gm.graph.nodes:
        node.meta.pop("lumos", None)
    # the eval graph's dead random ops (SDPA, dropout with p=0 or training=False) go too
    gm.graph.eliminate_dead_code(is_impure_node=lambda n: n.is_impure(impure_random=False))
    pruned = fx.GraphModule(gm, gm.graph, class_name=state.model_name)
    pruned._tracer_cls = BufferTracer
    lower_for_eager(pruned)
    guard.insert_into(pruned)           # sizes the graph holds as constants are checked
    batch_norm_follows_mode(pruned)     # fine-tuning the extracted model uses batch statistics
    pruned.lumos_kept_inputs = kept_inputs
    pruned.lumos_input_mode = inputs
    signature = work.call_signature     # model(x, mask=None) works as on the original
    if signature is not None and signature.needs_binding():
        pruned.register_forward_pre_hook(signature, with_kwargs=True)
    if not _reads_inputs(pruned.graph):
        warnings.warn("lumos: every path from the model inputs is gated off, so the extracted "
                      "model outputs a constant; train with a smaller lam or a larger budget",
                      stacklevel=3)
    return pruned.eval()


def _reads_inputs(graph: fx.Graph) -> bool:
    """Whether the output depends on an input's values (not just its batch size)."""
    seen, stack = set(), [n for n in graph.nodes if n.op == "output"]
    while stack:
        node = stack.pop()
        if node.op == "placeholder":
            return True
        if node in seen or node.target is aten.sym_size.int:
            continue
        seen.add(node)
        stack.extend(node.all_input_nodes)
    return False
