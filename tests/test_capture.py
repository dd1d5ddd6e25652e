"""Capture with torch.export: train/eval-correct graphs, real library models, clear errors."""
from __future__ import annotations

import copy
import io

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import lumos_fx as lumos
from lumos_fx.capture import capture
from tests.test_exactness_zoo import randomize_gates


class TrainingOnlyNoise(nn.Module):
    """``if self.training:`` code: the symbolic tracer baked it in (silently wrong)."""

    def __init__(self):
        super().__init__()
        self.fc1, self.fc2 = nn.Linear(6, 16), nn.Linear(16, 2)

    def forward(self, x):
        h = torch.relu(self.fc1(x))
        if self.training:
            h = h + 0.5 * torch.randn_like(h)
        return self.fc2(F.dropout(h, 0.2, self.training))


class BatchNormAct2d(nn.BatchNorm2d):
    """timm's BatchNormAct2d: BatchNorm whose forward calls F.batch_norm itself."""

    def forward(self, x):
        x = F.batch_norm(x, self.running_mean, self.running_var, self.weight, self.bias,
                         self.training or not self.track_running_stats, self.momentum, self.eps)
        return F.silu(x)


class TimmStyleBlock(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3, padding=1, bias=False)
        self.bn = BatchNormAct2d(8, eps=1e-3, momentum=0.3)
        self.dw = nn.Conv2d(8, 8, 3, padding=1, groups=8, bias=False)
        self.bn2 = BatchNormAct2d(8)
        self.head = nn.Linear(8, 4)

    def forward(self, x):
        h = self.bn2(self.dw(self.bn(self.conv(x))))
        return self.head(h.mean((2, 3)))


@pytest.mark.parametrize("make,shape", [(TrainingOnlyNoise, (8, 6)), (TimmStyleBlock, (4, 3, 8, 8))])
def test_compiled_in_train_mode_the_eval_graph_is_the_models_eval(make, shape):
    torch.manual_seed(0)
    model = make().train()
    x = torch.randn(*shape)
    gated = lumos.compile(model, example_inputs=(x,))
    assert gated.training and model.training
    reference = copy.deepcopy(model).eval()
    x2 = torch.randn(*shape)
    with torch.no_grad():
        torch.testing.assert_close(gated.eval()(x2), reference(x2), rtol=1e-6, atol=1e-6)
    randomize_gates(gated, seed=1)
    pruned = lumos.extract(gated.eval())
    assert lumos.verify(gated, pruned, (x2,)) < 1e-5


def test_train_graph_keeps_training_behaviour_and_updates_bn_stats_only_in_train():
    torch.manual_seed(0)
    model = TimmStyleBlock()
    gated = lumos.compile(model, example_inputs=(torch.randn(4, 3, 8, 8),)).train()
    stats = gated.get_buffer("bn.running_mean").clone()
    assert torch.equal(stats, model.bn.running_mean)       # compile did not run the train graph
    gated(torch.randn(4, 3, 8, 8))
    assert not torch.equal(gated.get_buffer("bn.running_mean"), stats)
    assert torch.equal(model.bn.running_mean, stats)        # the user's model is untouched
    moved = gated.get_buffer("bn.running_mean").clone()
    gated.eval()(torch.randn(4, 3, 8, 8))
    assert torch.equal(gated.get_buffer("bn.running_mean"), moved)
    noisy = lumos.compile(TrainingOnlyNoise(), example_inputs=(torch.randn(8, 6),)).train()
    x = torch.randn(8, 6)
    assert not torch.equal(noisy(x), noisy(x))              # noise and dropout in train mode


def test_both_graphs_share_one_state_and_gates():
    gated = lumos.compile(TrainingOnlyNoise(), example_inputs=(torch.randn(8, 6),))
    train, evaluate = gated.graph_module(True), gated.graph_module(False)
    assert train.get_parameter("fc1.weight") is evaluate.get_parameter("fc1.weight")
    assert train.lumos_gates is evaluate.lumos_gates is gated.lumos_gates
    assert "fc1.weight" in dict(gated.named_parameters())


def test_capture_keeps_the_batch_dynamic_for_a_batch_of_one():
    model = nn.Sequential(nn.Linear(5, 4), nn.ReLU(), nn.Linear(4, 2)).eval()
    gated = lumos.compile(model, example_inputs=(torch.randn(1, 5),)).eval()
    x = torch.randn(9, 5)
    torch.testing.assert_close(gated(x), model(x))


def test_capture_alone_copies_nothing():
    model = nn.Sequential(nn.Linear(3, 2))
    graphs = capture(model, (torch.randn(2, 3),))
    assert graphs[False].get_parameter("0.weight") is model[0].weight


def test_an_already_compiled_model_is_refused_with_a_pointer_to_extract():
    gated = lumos.compile(nn.Linear(3, 2), example_inputs=(torch.randn(2, 3),))
    with pytest.raises(lumos.InputError, match="already compiled"):
        lumos.compile(gated, example_inputs=(torch.randn(2, 3),))


class LSTMRegressor(nn.Module):
    def __init__(self):
        super().__init__()
        self.lstm = nn.LSTM(6, 16, batch_first=True)
        self.head = nn.Linear(16, 1)

    def forward(self, x):
        h, _ = self.lstm(x)
        return self.head(h[:, -1])


def test_lstm_regressor_compiles_and_is_exact():
    model = LSTMRegressor().eval()
    x = torch.randn(4, 10, 6)
    gated = lumos.compile(model, example_inputs=(x,)).eval()
    torch.testing.assert_close(gated(x), model(x))
    randomize_gates(gated, seed=0)
    assert lumos.verify(gated, lumos.extract(gated), (torch.randn(3, 10, 6),)) < 1e-5


def _hf_models():
    transformers = pytest.importorskip("transformers")
    bert = transformers.BertModel(transformers.BertConfig(
        vocab_size=100, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
        intermediate_size=64, max_position_embeddings=64))
    vit = transformers.ViTModel(transformers.ViTConfig(
        image_size=32, patch_size=8, num_channels=3, hidden_size=32, num_hidden_layers=2,
        num_attention_heads=4, intermediate_size=64))
    # grouped-query attention (2 kv heads for 4), rotary embeddings, RMSNorm, SwiGLU
    llama = transformers.LlamaModel(transformers.LlamaConfig(
        vocab_size=100, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64,
        use_cache=False))     # a DynamicCache output is no tensor pytree: export refuses it
    # Hugging Face's Conv1D: a weight stored (in, out) and read by addmm
    gpt2 = transformers.GPT2Model(transformers.GPT2Config(
        vocab_size=100, n_embd=32, n_layer=2, n_head=4, n_positions=64, use_cache=False))
    # a mixture of experts: fused (experts, 2 * inner, hidden) weights, grouped products
    mixtral = transformers.MixtralModel(transformers.MixtralConfig(
        vocab_size=100, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, num_local_experts=4,
        num_experts_per_tok=2, max_position_embeddings=64, use_cache=False))
    # Falcon's grouped layout: (groups, q_per_group + 2, head_dim) picked by slices and
    # literal indices, the key/value heads broadcast to their query heads with literal sizes
    falcon = transformers.FalconModel(transformers.FalconConfig(
        vocab_size=100, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
        num_kv_heads=2, new_decoder_architecture=True, use_cache=False))
    return {"bert": (bert, lambda b: (torch.randint(0, 100, (b, 16)),)),
            "falcon": (falcon, lambda b: (torch.randint(0, 100, (b, 10)),)),
            "mixtral": (mixtral, lambda b: (torch.randint(0, 100, (b, 10)),)),
            "gpt2": (gpt2, lambda b: (torch.randint(0, 100, (b, 12)),)),
            "vit": (vit, lambda b: (torch.randn(b, 3, 32, 32),)),
            "llama": (llama, lambda b: (torch.randint(0, 100, (b, 10)),))}


@pytest.mark.parametrize("name", ["bert", "vit", "llama", "gpt2", "mixtral", "falcon"])
def test_hugging_face_models_compile_in_train_mode_and_extract_exactly(name):
    torch.manual_seed(0)
    model, make = _hf_models()[name]
    model.train()
    gated = lumos.compile(model, example_inputs=make(2))
    model.eval()
    x = make(3)
    with torch.no_grad():
        expected = model(*x).last_hidden_state
        torch.testing.assert_close(gated.eval()(*x).last_hidden_state, expected)
    assert any(k in key for key in lumos.gates(gated)
               for k in ("intermediate", "fc1", "gate_proj", "c_fc", "experts", "h_to_4h"))
    randomize_gates(gated, seed=2)
    pruned = lumos.extract(gated)
    assert lumos.verify(gated, pruned, x) < 1e-5
    assert sum(p.numel() for p in pruned.parameters()) < sum(p.numel() for p in model.parameters())
    if name == "mixtral":      # every expert keeps the same inner channels
        experts = pruned.get_submodule("layers.0.mlp.experts")
        inner = experts.down_proj.shape[2]
        assert inner < 64 and experts.gate_up_proj.shape[1] == 2 * inner
    if name == "falcon":       # a kv group closed: its query heads go with it
        groups = {g.name: g for g in lumos.report(gated).groups}
        assert groups["h.0.self_attention.query_key_value"].pinned is None


@pytest.mark.parametrize("name,hidden", [("GIN", "convs.0.nn.lins.0"), ("GCN", "convs.0.lin"),
                                         ("GraphSAGE", "convs.0.lin_l"), ("GAT", "convs.0.lin")])
def test_pyg_model_classes_compile_gate_their_hidden_widths_and_extract_exactly(name, hidden):
    pyg = pytest.importorskip("torch_geometric.nn")
    torch.manual_seed(0)
    model = getattr(pyg.models, name)(5, 16, num_layers=2, out_channels=3).train()
    x, edges = torch.randn(10, 5), torch.randint(0, 10, (2, 30))
    dims = ({0: torch.export.Dim("nodes", min=2)}, {1: torch.export.Dim("edges", min=2)})
    gated = lumos.compile(model, example_inputs=(x, edges), dynamic_shapes=dims)
    assert {"x", hidden} <= set(lumos.gates(gated)), sorted(lumos.gates(gated))
    other = (torch.randn(14, 5), torch.randint(0, 14, (2, 41)))   # another graph size
    with torch.no_grad():
        torch.testing.assert_close(gated.eval()(*other), model.eval()(*other))
    randomize_gates(gated, seed=3)
    pruned = lumos.extract(gated)
    assert lumos.verify(gated, pruned, other) < 1e-5
    assert sum(p.numel() for p in pruned.parameters()) < sum(p.numel() for p in model.parameters())


def test_gated_model_survives_save_load_deepcopy_and_dtype_moves():
    torch.manual_seed(0)
    gated = lumos.compile(TimmStyleBlock(), example_inputs=(torch.randn(4, 3, 8, 8),))
    randomize_gates(gated, seed=4)
    buffer = io.BytesIO()
    torch.save(gated, buffer)
    buffer.seek(0)
    loaded = torch.load(buffer, weights_only=False)
    x = torch.randn(2, 3, 8, 8)
    for other in (loaded, copy.deepcopy(gated)):
        with torch.no_grad():
            torch.testing.assert_close(other.eval()(x), gated.eval()(x))
        assert float(lumos.penalty(other)) == pytest.approx(float(lumos.penalty(gated)))
        assert lumos.verify(other, lumos.extract(other), (x,)) < 1e-5
    double = copy.deepcopy(gated).double()
    pruned = lumos.extract(double)          # the exactness check follows the model's dtype
    assert pruned.conv.weight.dtype == torch.float64
    with torch.no_grad():
        torch.testing.assert_close(pruned(x.double()), double.eval()(x.double()))


def test_torch_compile_wrapper_keeps_the_lumos_state():
    gated = lumos.compile(nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 2)),
                          example_inputs=(torch.randn(3, 4),))
    compiled = torch.compile(gated, backend="eager")
    compiled(torch.randn(3, 4)).sum().backward()
    assert float(lumos.penalty(compiled)) > 0
    assert lumos.extract(compiled) is not None


def test_penalty_backpropagates_after_the_task_loss_of_a_compiled_model():
    """Under AOTAutograd the forward's outputs belong to a graph that frees its saved
    tensors at the first backward: the penalty must not hang its gradient on them."""
    gated = lumos.compile(nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 2)),
                          example_inputs=(torch.randn(3, 4),))
    gates = list(lumos.gates(gated).values())
    compiled = torch.compile(gated, backend="aot_eager")
    compiled(torch.randn(3, 4)).sum().backward()
    task = [g.log_alpha.grad.clone() for g in gates]
    lumos.penalty(compiled).backward()                 # raised before: freed saved tensors
    total = [g.log_alpha.grad.clone() for g in gates]
    gated.zero_grad()
    lumos.penalty(gated).backward()
    for gate, t, both in zip(gates, task, total):
        assert gate.log_alpha.grad.abs().sum() > 0
        torch.testing.assert_close(both, t + gate.log_alpha.grad)


class DropPath(nn.Module):
    """timm's stochastic depth: a training-only random branch."""

    def __init__(self, p: float):
        super().__init__()
        self.p = p

    def forward(self, x):
        if self.p == 0.0 or not self.training:
            return x
        keep = x.new_empty(x.shape[0], 1, 1, 1).bernoulli_(1 - self.p)
        return x * keep / (1 - self.p)


class SqueezeExcite(nn.Module):
    def __init__(self, channels: int, reduced: int, gate=torch.sigmoid):
        super().__init__()
        self.conv_reduce, self.conv_expand = nn.Conv2d(channels, reduced, 1), nn.Conv2d(reduced, channels, 1)
        self.gate = gate

    def forward(self, x):
        s = self.conv_expand(F.silu(self.conv_reduce(x.mean((2, 3), keepdim=True))))
        return x * self.gate(s)


class MBConv(nn.Module):
    """timm-style inverted residual: BatchNormAct2d, depthwise, SE, DropPath."""

    def __init__(self, cin: int, cout: int, expand: int, gate=torch.sigmoid):
        super().__init__()
        mid = cin * expand
        self.conv_pw = nn.Conv2d(cin, mid, 1, bias=False)
        self.bn1 = BatchNormAct2d(mid)
        self.conv_dw = nn.Conv2d(mid, mid, 3, padding=1, groups=mid, bias=False)
        self.bn2 = BatchNormAct2d(mid)
        self.se = SqueezeExcite(mid, max(2, cin // 4), gate)
        self.conv_pwl = nn.Conv2d(mid, cout, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(cout)
        self.drop_path = DropPath(0.2)
        self.residual = cin == cout

    def forward(self, x):
        h = self.se(self.bn2(self.conv_dw(self.bn1(self.conv_pw(x)))))
        h = self.bn3(self.conv_pwl(h))
        return x + self.drop_path(h) if self.residual else h


class EfficientNetStyle(nn.Module):
    def __init__(self, gate=torch.sigmoid):
        super().__init__()
        self.conv_stem, self.bn1 = nn.Conv2d(3, 8, 3, 2, 1, bias=False), BatchNormAct2d(8)
        self.blocks = nn.Sequential(MBConv(8, 8, 1, gate), MBConv(8, 12, 4, gate),
                                    MBConv(12, 12, 4, gate))
        self.conv_head, self.bn2 = nn.Conv2d(12, 32, 1, bias=False), BatchNormAct2d(32)
        self.classifier = nn.Linear(32, 5)

    def forward(self, x):
        h = self.bn2(self.conv_head(self.blocks(self.bn1(self.conv_stem(x)))))
        return self.classifier(F.dropout(h.mean((2, 3)), 0.2, self.training))


@pytest.mark.parametrize("gate", [torch.sigmoid, F.hardsigmoid], ids=["efficientnet", "mobilenetv3"])
def test_timm_style_blocks_compiled_in_train_mode_are_exact(gate):
    torch.manual_seed(0)
    model = EfficientNetStyle(gate).train()
    x = torch.randn(4, 3, 16, 16)
    gated = lumos.compile(model, example_inputs=(x,))
    reference = copy.deepcopy(model).eval()
    x2 = torch.randn(3, 3, 16, 16)
    with torch.no_grad():
        torch.testing.assert_close(gated.eval()(x2), reference(x2), rtol=1e-5, atol=1e-6)
    assert {"conv_stem", "blocks.1.conv_pw"} <= set(lumos.gates(gated))
    randomize_gates(gated, seed=5)
    pruned = lumos.extract(gated.eval())
    assert lumos.verify(gated, pruned, (x2,)) < 1e-5
    gated.train()(x2).sum().backward()          # trains: gradients reach weights and gates
    assert gated.get_parameter("conv_stem.weight").grad is not None


class ModeConstants(nn.Module):
    """Tensor constants built in forward differ by mode: export lifts them per graph."""

    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(3, 3)

    def forward(self, x):
        h = self.fc(x)
        h = h * (torch.tensor([1.0, 2.0, 3.0]) if self.training else torch.tensor([4.0, 5.0, 6.0]))
        if not self.training:
            h = h + torch.tensor([1.0, 2.0, 3.0])
        return h


def test_constants_lifted_from_either_mode_are_kept_apart_and_out_of_the_state_dict():
    model = ModeConstants()
    gated = lumos.compile(model, example_inputs=(torch.randn(4, 3),))
    x = torch.randn(2, 3)
    with torch.no_grad():
        torch.testing.assert_close(gated.eval()(x), model.eval()(x))
    assert set(gated.state_dict()) == {"fc.weight", "fc.bias", "lumos_gates.x.log_alpha",
                                       "lumos_apply.e0.index", "lumos_apply.t0.index"}
    assert lumos.verify(gated, lumos.extract(gated), (x,)) < 1e-6


def test_a_returned_key_value_cache_names_use_cache_false():
    transformers = pytest.importorskip("transformers")
    model = transformers.GPT2LMHeadModel(transformers.GPT2Config(
        vocab_size=50, n_embd=16, n_layer=1, n_head=2, n_positions=32))    # use_cache=True
    with pytest.raises(lumos.TraceError, match="use_cache=False"):
        lumos.compile(model, example_inputs=(torch.randint(0, 50, (2, 6)),))


def test_a_returned_object_export_cannot_flatten_names_the_fix():
    class Result:
        def __init__(self, value):
            self.value = value

    class Wrapped(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc = nn.Linear(3, 2)

        def forward(self, x):
            return Result(self.fc(x))

    with pytest.raises(lumos.TraceError, match="register_pytree_node"):
        lumos.compile(Wrapped(), example_inputs=(torch.randn(2, 3),))
