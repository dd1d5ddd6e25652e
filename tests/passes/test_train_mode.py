"""The extracted model's batch norms follow ``.train()``/``.eval()`` like the user's."""
import copy

import torch
from torch import nn

import lumos_fx as lumos
from lumos_fx.passes.train_mode import ModeBatchNorm


def _model():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 6, 3, padding=1), nn.BatchNorm2d(6), nn.ReLU(),
                          nn.Conv2d(6, 4, 3, padding=1), nn.BatchNorm2d(4, momentum=0.3),
                          nn.ReLU(), nn.Flatten(), nn.Linear(4 * 25, 2))
    model.train()
    for _ in range(3):                       # running statistics away from their init
        model(torch.randn(16, 3, 5, 5) * 2 + 1)
    return model.eval()


def test_unpruned_extraction_trains_like_the_original():
    model = _model()
    pruned = lumos.extract(lumos.compile(model, example_inputs=(torch.randn(4, 3, 5, 5),)))
    assert sum(isinstance(m, ModeBatchNorm) for m in pruned.modules()) == 2
    reference = copy.deepcopy(model).train()
    pruned.train()
    x = torch.randn(8, 3, 5, 5)
    torch.testing.assert_close(pruned(x), reference(x), rtol=1e-5, atol=1e-6)
    # both updated their running statistics the same way, at each layer's momentum
    for name in ("1", "4"):
        ours, theirs = pruned.get_submodule(name), reference.get_submodule(name)
        torch.testing.assert_close(ours.running_mean, theirs.running_mean)
        torch.testing.assert_close(ours.running_var, theirs.running_var)
    pruned.eval(), reference.eval()
    torch.testing.assert_close(pruned(x), reference(x), rtol=1e-5, atol=1e-6)


def test_pruned_model_is_exact_in_eval_and_uses_batch_statistics_in_train():
    model = _model()
    gated = lumos.compile(model, example_inputs=(torch.randn(4, 3, 5, 5),))
    with torch.no_grad():
        lumos.gates(gated)["0"].log_alpha[[1, 4]] = -6.0
    pruned = lumos.extract(gated)
    assert pruned.get_submodule("1").running_mean.shape == (4,)
    x = torch.randn(8, 3, 5, 5)
    assert lumos.verify(gated.eval(), pruned, (x,)) < 1e-5
    before = pruned.get_submodule("1").running_mean.clone()
    with torch.no_grad():
        eval_out = pruned(x)
    pruned.train()
    out = pruned(x)
    assert not torch.equal(pruned.get_submodule("1").running_mean, before)
    assert not torch.allclose(out, eval_out)      # batch, not running, statistics
    program = torch.export.export(pruned.eval(), (x,))
    assert any("batch_norm" in str(n.target) for n in program.graph.nodes)
    torch.testing.assert_close(program.module()(x), pruned(x))
