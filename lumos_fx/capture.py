"""Capture a model with ``torch.export`` as two ``GraphModule``s: train and eval.

``torch.export.export`` (non-strict, training IR) records the model as a small,
stable set of aten ops, with ``nn_module_stack`` naming the module each op came
from. Mode-dependent code (dropout, batch-norm statistics, ``if self.training:``
branches) is baked into an exported graph, so :func:`capture` exports twice,
once per mode; both graphs read the same parameter and buffer objects.

By default dim 0 of every tensor input (the batch, or a graph's node and edge
counts), the time dim of a ``(batch, time, features)`` input and every dim of
integer inputs (token ids, ``edge_index``) are ``Dim.AUTO``: what the code ties to a weight becomes a constant, the rest stays
dynamic; ``dynamic_shapes`` in ``torch.export`` form overrides it. An example batch of one would be captured as a constant size, so
it is repeated to two for the capture.

Example::

    >>> import torch
    >>> from lumos_fx.capture import capture
    >>> model = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.Dropout(0.5))
    >>> graphs = capture(model, (torch.randn(3, 4),))
    >>> [str(n.target) for n in graphs[False].graph.nodes if n.op == "call_function"]
    ['aten.linear.default', 'aten.dropout.default']
    >>> [n.args[2] for n in graphs[True].graph.nodes if "dropout" in n.name]   # train=True
    [True]
"""
from __future__ import annotations

import inspect
import linecache
import os
import traceback

import torch
from torch import fx, nn
from torch.utils._pytree import tree_flatten, tree_leaves, tree_map

from .errors import TraceError
from .input_guard import runs_at_another_size
from .pyg_capture import symbolic_graph_counts
from .passes.inline_no_grad import inline_no_grad

__all__ = ["BufferTracer", "capture", "default_dynamic_dims", "default_dynamic_shapes"]

# node.meta entries later passes read; the rest (FakeTensors, provenance) is dropped
KEPT_META = ("nn_module_stack", "stack_trace", "tensor_meta", "lumos")


class BufferTracer(fx.Tracer):
    """Re-traces a pickled graph keeping in-place buffer updates (BN's step count)."""

    proxy_buffer_attributes = True

    def __init__(self, *args, **kwargs):
        from .input_guard import check_inputs      # an extracted model's input check stays
        kwargs.setdefault("autowrap_functions", (check_inputs,))
        super().__init__(*args, **kwargs)


def default_dynamic_shapes(args: tuple, kwargs: dict):
    """``Dim.AUTO`` on dim 0 of every tensor argument (the batch, or a graph's nodes and
    edges), on dim 1 of a 3-d float tensor (the time of ``(batch, time, features)``)
    and on every dim of integer tensors (token ids, ``edge_index``): sizes the code
    ties to a weight become constants, the rest stays dynamic. Image sizes stay as
    in the example (dynamic spatial sizes make capture several times slower)."""
    def spec(value):
        dims = default_dynamic_dims(value)
        return {d: torch.export.Dim.AUTO for d in dims} if dims else None
    # nested inputs (a dict or tuple of tensors) get the same structure of specs
    return tuple(tree_map(spec, a) for a in args), {k: tree_map(spec, v) for k, v in kwargs.items()}


def the_model_inside(model: nn.Module) -> nn.Module:
    """The user's model inside ``torch.compile``, ``DataParallel`` and
    ``DistributedDataParallel`` wrappers (they forward to it unchanged); ``model`` itself
    when it is none of those."""
    from torch._dynamo.eval_frame import OptimizedModule
    while True:
        if isinstance(model, OptimizedModule):
            model = model._orig_mod
        elif isinstance(model, (nn.DataParallel, nn.parallel.DistributedDataParallel)):
            model = model.module
        else:
            return model


def fit_to_signature(model: nn.Module, specs: tuple) -> tuple:
    """Per-argument ``specs`` as ``torch.export`` matches them to ``model.forward``: the
    arguments a ``*args`` parameter collects (a wrapper's ``forward(*args, **kwargs)``)
    get theirs as one tuple."""
    try:
        parameters = list(inspect.signature(model.forward).parameters.values())
    except (TypeError, ValueError):
        return specs
    for i, parameter in enumerate(parameters):
        if parameter.kind is parameter.VAR_POSITIONAL:
            return (*specs[:i], tuple(specs[i:]))
        if parameter.kind not in (parameter.POSITIONAL_ONLY, parameter.POSITIONAL_OR_KEYWORD):
            break
    return specs


def default_dynamic_dims(value) -> tuple[int, ...]:
    """The dims of one input :func:`default_dynamic_shapes` asks to be dynamic."""
    if not isinstance(value, torch.Tensor) or value.dim() == 0:
        return ()
    if not value.is_floating_point():
        return tuple(range(value.dim()))
    # (a time dim of 1, really the channel of a (B, 1, L) signal, would be fixed anyway)
    return (0, 1) if value.dim() == 3 and value.shape[1] > 1 else (0,)


def batch_of_two(args: tuple, kwargs: dict) -> tuple[tuple, dict]:
    """An example batch of one is exported as the constant 1; capture with two."""
    tensors = [v for v in tree_leaves((args, kwargs)) if isinstance(v, torch.Tensor) and v.dim()]
    if not tensors or any(t.shape[0] != 1 for t in tensors):
        return args, kwargs

    def twice(v):
        return v.expand(2, *v.shape[1:]).clone() if isinstance(v, torch.Tensor) and v.dim() else v
    return tree_map(twice, args), tree_map(twice, kwargs)


def _as_graph_module(epm: nn.Module, model: nn.Module) -> fx.GraphModule:
    gm = fx.GraphModule(epm, epm.graph, class_name=type(model).__name__)
    gm._tracer_cls = BufferTracer
    inline_no_grad(gm)
    known = {name for name, _ in model.named_buffers()} | {n for n, _ in model.named_parameters()}
    for node in gm.graph.nodes:
        # lifted constants (plain tensor attributes) must not join the state_dict
        if node.op == "get_attr" and node.target not in known:
            owner, _, name = node.target.rpartition(".")
            module = gm.get_submodule(owner) if owner else gm
            if name in module._buffers:
                module._non_persistent_buffers_set.add(name)
        _keep_symbolic_sizes(node)
        for key in list(node.meta):
            if key not in KEPT_META:
                del node.meta[key]
    return gm


def _keep_symbolic_sizes(node: fx.Node) -> None:
    """``node.meta["lumos"]["symbolic"] = {dim: "s0"}``: which dims have a dynamic size
    (the FakeTensor in ``meta["val"]`` is dropped, these strings pickle)."""
    shape = getattr(node.meta.get("val"), "shape", ())
    sizes = {d: str(size.node.expr) for d, size in enumerate(shape)
             if isinstance(size, torch.SymInt) and not size.node.expr.is_number}
    if sizes:
        node.meta.setdefault("lumos", {})["symbolic"] = sizes


def capture(model: nn.Module, args: tuple, kwargs: dict | None = None, *,
            dynamic_shapes=None) -> dict[bool, fx.GraphModule]:
    """Export ``model`` in train and in eval mode; ``{True: train_gm, False: eval_gm}``.

    Both graph modules hold the model's own parameter and buffer objects (nothing
    is copied): pass a copy of the model unless that is wanted. The model's
    mode is restored afterwards.

    Raises:
        TraceError: ``torch.export`` cannot capture the model; the message quotes
            the line of the model's code and a remedy.
    """
    kwargs = dict(kwargs or {})
    args, kwargs = batch_of_two(tuple(args), kwargs)
    default_dynamic = dynamic_shapes is None
    if default_dynamic:
        dynamic_shapes = default_dynamic_shapes(args, kwargs)
        if not kwargs:
            dynamic_shapes = fit_to_signature(model, dynamic_shapes[0])
    was_training = model.training
    graphs = {}
    try:
        for mode in (True, False):
            model.train(mode)
            try:
                with symbolic_graph_counts():
                    program = torch.export.export(model, args, kwargs or None,
                                                  dynamic_shapes=dynamic_shapes, strict=False)
            except Exception as err:
                raise TraceError(explain(model, err, mode, args)) from err
            if default_dynamic:
                _check_batch_stayed_dynamic(program, model, args, kwargs)
            graphs[mode] = _as_graph_module(program.module(check_guards=False), model)
    finally:
        model.train(was_training)
    _share_attributes(graphs[True], graphs[False])
    return graphs


def _share_attributes(train: fx.GraphModule, evaluate: fx.GraphModule) -> None:
    """Make every tensor the eval graph reads also an attribute of the train graph
    module, under a name that means the same tensor there, since the gated model runs
    both graphs on one set of state. Parameters and buffers are the model's own
    objects in both; a constant lifted from eval-only code (or lifted in both under
    one name with different values) is added to both modules under a fresh name, as is
    the subgraph of a ``with torch.no_grad():`` block (a submodule both graphs call)."""
    changed = False
    for node in evaluate.graph.nodes:
        if node.op != "get_attr":
            continue
        value = _resolve(evaluate, node.target)
        if _resolve(train, node.target) is value:
            continue
        target, n = node.target, 0
        while _resolve(train, target) is not None or _resolve(evaluate, target) is not None:
            n += 1
            target = f"{node.target}_eval{n}"
        for gm in (train, evaluate):
            if isinstance(value, nn.Module):     # the body of a `with torch.no_grad():` block
                gm.add_module(target.replace(".", "_"), value)
            else:
                gm.register_buffer(target.replace(".", "_"), value, persistent=False)
        node.target, changed = target.replace(".", "_"), True
    if changed:
        evaluate.recompile()


def _resolve(gm: fx.GraphModule, path: str):
    owner, _, name = path.rpartition(".")
    try:
        module = gm.get_submodule(owner) if owner else gm
    except AttributeError:
        return None
    return getattr(module, name, None)


def _is_constant(size) -> bool:
    return isinstance(size, int) or not size.node.expr.free_symbols


_SIZE_ARGUMENTS = {"size", "sizes", "shape", "repeats", "start", "end", "length", "split_size",
                   "split_sizes", "output_size", "chunks", "sections", "step"}


def _user_frame(stack_trace: str | None) -> str | None:
    """``File ..., line N, in f`` and its code line: the innermost frame of the user's code."""
    lines = (stack_trace or "").strip().splitlines()
    for head, code in reversed(list(zip(lines, lines[1:]))):
        head = head.strip()
        if head.startswith("File ") and not any(
                d in head for d in (_TORCH_DIR, _LUMOS_DIR)):
            return f"{head}\n    {code.strip()}"
    return None


def _check_batch_stayed_dynamic(program, model: nn.Module, args: tuple, kwargs: dict) -> None:
    """A batch dim the code turned into a constant (``len(x)``, ``int(x.shape[0])``, a
    literal in ``reshape``) would make the gated model silently wrong at other batch
    sizes: raise, naming the model line that uses the constant where it can be found."""
    batch = next((v.shape[0] for v in (*args, *kwargs.values())
                  if isinstance(v, torch.Tensor) and v.dim()), None)
    user_inputs = [n for n in program.graph.nodes if n.op == "placeholder"
                   and n.name in program.graph_signature.user_inputs]
    static = [(i, n.name) for i, n in enumerate(user_inputs) if hasattr(n.meta.get("val"), "shape")
              and n.meta["val"].dim() and _is_constant(n.meta["val"].shape[0])
              and int(n.meta["val"].shape[0]) == batch]
    flat, spec = tree_flatten(args)
    if static and not kwargs and len(flat) == len(user_inputs):
        # an op's kernel may fix a dim 0 the graph never reads: the time of a (T, B, F)
        # input to nn.LSTM. Not an error when the graph runs exactly with it one longer.
        unlifted = program.module(check_guards=False)
        graph = fx.GraphModule(unlifted, unlifted.graph)    # without its input-size check
        static = [(i, name) for i, name in static
                  if not runs_at_another_size(model, graph, flat, spec, i, 0)]
    static = [name for _, name in static]
    if batch is None or not static:
        return
    def uses_batch(arg) -> bool:
        if isinstance(arg, (list, tuple)):
            return any(uses_batch(a) for a in arg)
        return isinstance(arg, int) and not isinstance(arg, bool) and arg == batch

    def sizes_use_batch(node) -> bool:     # size arguments only: a conv's stride may equal it
        schema = getattr(node.target, "_schema", None)
        if schema is None:
            return uses_batch(node.args)
        named = dict(zip((a.name for a in schema.arguments), node.args)) | dict(node.kwargs)
        return any(uses_batch(v) for k, v in named.items() if k in _SIZE_ARGUMENTS)
    calls = [n for n in program.graph.nodes if n.op == "call_function"]
    suspects = [n for n in calls if sizes_use_batch(n)] + [n for n in calls if uses_batch(n.args)]
    frames = [_user_frame(n.meta.get("stack_trace")) for n in suspects]
    where = next((f"\n  probably here:\n  {f}" for f in frames if f), "")
    raise TraceError(
        f"lumos_fx could not keep the batch dim of {type(model).__name__} dynamic: the "
        f"model's code turns it into the constant {batch} (inputs {', '.join(static)}), so "
        f"the compiled model would be wrong at any other batch size.{where}\n"
        f"Remedy: compute with sizes as tensors or symbolic ints (x.shape[0], -1 in view/"
        f"reshape) instead of len(x), int(...) or literal batch sizes; or pass "
        f"dynamic_shapes= to compile if the batch is really fixed")


_TORCH_DIR = os.path.dirname(torch.__file__) + os.sep
_LUMOS_DIR = os.path.dirname(os.path.abspath(__file__)) + os.sep

# (words in torch's message, what went wrong, the fix); first match wins
_KNOWN = [
    (("cache_utils",),
     "the model returns a Hugging Face key/value cache, which torch.export cannot flatten.",
     "build the model with use_cache=False (model.config.use_cache = False before compile); "
     "the cache only speeds up generation one token at a time"),
    (("in output, which is not a known type",),
     "the model returns an object torch.export cannot flatten into tensors.",
     "return tensors (or tuples, lists and dicts of them), or register the type with "
     "torch.utils._pytree.register_pytree_node"),
    (("data-dependent", "GuardOnDataDependent", "Could not guard on data-dependent"),
     "Python control flow or a Python number depends on tensor values.",
     "select with torch.where(cond, a, b), use torch.cond for real branches, or keep the "
     "value a tensor (x.item() without int()/bool())"),
    (("', min=", "', max="),
     "the code works only for part of the range a named torch.export.Dim allows "
     "(torch's generated guard is quoted below).",
     "give the Dim that range, as torch's suggested fix below says, or use "
     "torch.export.Dim.AUTO, which takes the range the code needs"),
    (("Constraints violated", "specialized"),
     "the code forces a dynamic size to be a constant.",
     "avoid literal batch sizes in view/reshape (use -1 or x.shape[0]), or pass "
     "dynamic_shapes= explicitly"),
    (("mat1 and mat2", "size mismatch", "must match the size", "shapes cannot be multiplied",
      "same reduction dim", "shape",
      "Expected", "expected"),
     "the model fails on the example inputs.",
     "pass example_inputs with the shapes and dtypes the model is called with"),
]


def _random_skip(frame: traceback.FrameSummary) -> bool:
    """Whether the failing line, or the few before it, branch on a random draw
    (Hugging Face's ``dropout_probability = torch.rand([])`` ... ``if skip_the_layer``)."""
    context = " ".join(linecache.getline(frame.filename, n)
                       for n in range(max(1, frame.lineno - 4), frame.lineno + 1))
    lowered = context.lower()
    return "layerdrop" in lowered or ("torch.rand" in context and
                                      ("skip" in lowered or "drop" in lowered))


def explain(model: nn.Module, err: Exception, training: bool, args: tuple = ()) -> str:
    """The ``TraceError`` message for a failed export: the user's line and a remedy."""
    summary = traceback.extract_tb(err.__traceback__)
    user = [fs for fs in summary if not fs.filename.startswith("<")    # generated code
            and not os.path.abspath(fs.filename).startswith((_TORCH_DIR, _LUMOS_DIR))]
    text = f"{type(err).__name__}: {err}"
    what, fix = "torch.export cannot capture this code.", (
        "rewrite the line without Python-level use of tensor values, or wrap the "
        "untraceable part in a function registered with torch.library.custom_op")
    for words, known_what, known_fix in _KNOWN:
        if any(word in text for word in words):
            what, fix = known_what, known_fix
            break
    if user and what.startswith("Python control flow") and _random_skip(user[-1]):
        what = ("a layer is skipped at random in training (LayerDrop): Python branches on a "
                "random number.")
        fix = ("set the skip probability to 0 while pruning (Hugging Face: "
               "model.config.layerdrop = 0.0 before building the model), or multiply the "
               "layer's output by a random 0/1 tensor instead of branching")
    mode = "train" if training else "eval"
    shapes = ", ".join(f"Tensor{tuple(a.shape)}" if isinstance(a, torch.Tensor)
                       else type(a).__name__ for a in args)
    lines = [f"lumos_fx could not capture {type(model).__name__} (in {mode} mode, example "
             f"inputs {shapes}) with torch.export: {what}"]
    if user:
        fs = user[-1]
        lines += [f'  File "{fs.filename}", line {fs.lineno}, in {fs.name}',
                  "    " + linecache.getline(fs.filename, fs.lineno).strip()]
    first = text.strip().splitlines()
    lines += [f"Remedy: {fix}",
              "Original error: " + "\n".join(first[:12]) + ("\n  ..." if len(first) > 12 else "")]
    return "\n".join(lines)
