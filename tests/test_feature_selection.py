"""Input-feature selection end to end (the paper's S2 mode).

20 standard-normal inputs, of which only 3 (0, 3 and 7) determine the target
``y = sin(1.5 x0) + x3 * x7 + 0.5 x3`` (plus a little noise, standardised).
An MLP 20-64-64-1 is trained, compiled, and fine-tuned with
``mse + lumos.penalty(gated)`` (default penalty, plain Adam, constant lr
then a short low-lr phase). The extracted model must keep
the 3 informative inputs (and at most 2 others) and reach R^2 >= 0.95 on
held-out data.
"""
from __future__ import annotations

import pytest
import torch
from torch import nn

import lumos_fx as lumos

N_FEATURES = 20
INFORMATIVE = (0, 3, 7)


def _data(n: int, seed: int):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, N_FEATURES, generator=g)
    y = torch.sin(1.5 * x[:, 0]) + x[:, 3] * x[:, 7] + 0.5 * x[:, 3]
    y = y + 0.05 * torch.randn(n, generator=g)
    return x, y.unsqueeze(1)


def _r2(pred: torch.Tensor, y: torch.Tensor) -> float:
    return float(1 - (pred - y).pow(2).sum() / (y - y.mean()).pow(2).sum())


def _train(model: nn.Module, x, y, steps: int, lr: float, penalty: bool, seed: int):
    g = torch.Generator().manual_seed(seed)
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    model.train()
    for _ in range(steps):
        idx = torch.randint(len(x), (64,), generator=g)
        loss = nn.functional.mse_loss(model(x[idx]), y[idx])
        if penalty:
            loss = loss + lumos.penalty(model)
        opt.zero_grad()
        loss.backward()
        opt.step()
    return model


@pytest.fixture(scope="module")
def selected():
    torch.manual_seed(0)
    x_train, y_train = _data(4096, seed=0)
    x_test, y_test = _data(1024, seed=1)
    mean, std = y_train.mean(), y_train.std()
    y_train, y_test = (y_train - mean) / std, (y_test - mean) / std

    model = nn.Sequential(nn.Linear(N_FEATURES, 64), nn.ReLU(), nn.Linear(64, 64), nn.ReLU(),
                          nn.Linear(64, 1))
    _train(model, x_train, y_train, steps=1500, lr=3e-3, penalty=False, seed=2)  # S2: baseline

    names = [f"x{i}" for i in range(N_FEATURES)]
    gated = lumos.compile(model, example_inputs=(x_train[:8],), feature_names=names)
    # Gates need a sustained learning rate to close (a decaying schedule keeps
    # every input); a short low-lr phase afterwards recovers accuracy.
    _train(gated, x_train, y_train, steps=2500, lr=3e-3, penalty=True, seed=3)
    _train(gated, x_train, y_train, steps=500, lr=5e-4, penalty=True, seed=4)
    gated.eval()
    pruned = lumos.extract(gated).eval()
    return gated, pruned, x_test, y_test


def test_keeps_informative_inputs(selected):
    gated, pruned, x_test, y_test = selected
    kept_inputs = pruned.lumos_kept_inputs
    assert len(kept_inputs) == 1, kept_inputs
    kept = sorted(next(iter(kept_inputs.values())))
    assert set(INFORMATIVE) <= set(kept), f"an informative input was dropped: kept {kept}"
    assert len(kept) <= len(INFORMATIVE) + 2, f"too many inputs kept: {kept}"


def test_pruned_model_is_accurate_and_exact(selected):
    gated, pruned, x_test, y_test = selected
    with torch.no_grad():
        pred = pruned(x_test)
        ref = gated(x_test)
    err = float((pred - ref).abs().max() / ref.abs().max())
    assert err <= 1e-5, err
    r2 = _r2(pred, y_test)
    assert r2 >= 0.95, f"held-out R^2 {r2:.4f}"


def test_kept_inputs_only_model(selected):
    gated, pruned, x_test, y_test = selected
    kept = next(iter(pruned.lumos_kept_inputs.values()))
    narrow = lumos.extract(gated, inputs="kept").eval()
    with torch.no_grad():
        torch.testing.assert_close(narrow(x_test[:, list(kept)]), pruned(x_test))
    first = next(p for p in narrow.parameters() if p.dim() == 2)
    assert first.shape[1] == len(kept)


def test_report_names_kept_features(selected):
    gated, pruned, x_test, y_test = selected
    text = str(lumos.report(gated))
    kept = next(iter(pruned.lumos_kept_inputs.values()))
    for i in kept:
        assert f"x{i}" in text, text


# lumos.select_features: a held-out test closes inputs a trained model only uses to fit its
# training set (noise it memorised), which the training loss and the penalty defend.

def _memorised(n_train: int = 96, seed: int = 0):
    """An MLP trained to overfit 96 samples of 3 informative and 5 noise inputs."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n_train + 1024, 8, generator=g)
    y = (x[:, 0] + torch.sin(2 * x[:, 1]) + 0.5 * x[:, 2]).unsqueeze(1)
    torch.manual_seed(seed)
    model = nn.Sequential(nn.Linear(8, 64), nn.ReLU(), nn.Linear(64, 64), nn.ReLU(),
                          nn.Linear(64, 1))
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    for _ in range(400):
        opt.zero_grad()
        nn.functional.mse_loss(model(x[:n_train]), y[:n_train]).backward()
        opt.step()
    held_out = [(x[i:i + 128], y[i:i + 128]) for i in range(n_train, n_train + 1024, 128)]
    return model, x[:n_train], y[:n_train], held_out


def _per_sample(out, target):
    return nn.functional.mse_loss(out, target, reduction="none")


def test_select_features_drops_memorised_noise_and_stays_exact():
    model, x_train, y_train, held_out = _memorised()
    names = ["a", "b", "c", "n0", "n1", "n2", "n3", "n4"]
    with torch.no_grad():
        noise_used = (model[0].weight[:, 3:].norm() / model[0].weight[:, :3].norm()).item()
    assert noise_used > 0.3, "the baseline should rely on the noise inputs for this test"
    before = {k: v.clone() for k, v in model.state_dict().items()}
    gated = lumos.compile(model, example_inputs=(x_train[:4],), feature_names=names).train()
    selection = lumos.select_features(gated, held_out, _per_sample)
    assert gated.training, "select_features must restore the training mode"
    assert selection.dropped == ["n0", "n1", "n2", "n3", "n4"], str(selection)
    assert selection.kept == ["a", "b", "c"]
    assert selection.samples == 1024 and selection.joint_harm < 2 * selection.joint_stderr + 1e-12
    assert selection.joint_harm + 2 * selection.joint_stderr < 0.05 * selection.total_harm
    assert all(s.harm > 2 * s.stderr for s in selection.scores if not s.dropped)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    gate = next(iter(lumos.gates(gated).values()))
    assert gate.eval()()[3:].eq(0).all() and gate()[:3].eq(1).all()
    pruned = lumos.extract(gated.eval())
    assert pruned.lumos_kept_inputs == {"input": [0, 1, 2]}
    assert lumos.verify(gated, pruned, (held_out[0][0],)) < 1e-5
    assert set(selection.to_dict()) >= {"scores", "dropped", "kept", "joint_harm"}
    assert "n0" in str(selection) and "loss rise" in str(selection)
    report = lumos.report(gated)
    assert report.to_dict()["feature_test"]["dropped"] == selection.dropped
    assert str(selection) in str(report) and "Held-out test" in report.to_html()


def test_select_features_keeps_features_that_only_matter_together():
    # one strong input and 16 weak ones: permuted alone each weak one is within the test's
    # noise and well under the tolerance, permuted together they are not; the joint check
    # keeps most of them
    g = torch.Generator().manual_seed(3)
    x = torch.randn(2048, 17, generator=g)
    model = nn.Linear(17, 1)
    with torch.no_grad():
        model.weight.fill_(0.04)
        model.weight[0, 0] = 1.0
        model.bias.zero_()
    y = model(x).detach() + torch.randn(2048, 1, generator=g)
    gated = lumos.compile(model, example_inputs=(x[:2],))
    held_out = [(x[i:i + 256], y[i:i + 256]) for i in range(0, 2048, 256)]
    selection = lumos.select_features(gated, held_out, _per_sample)
    margin = selection.tolerance * selection.total_harm
    weak = [s for s in selection.scores if s.harm < 2 * s.stderr and s.harm + 2 * s.stderr < margin]
    assert len(weak) >= 8, str(selection)          # individually these look negligible
    assert 0 < len(selection.dropped) < len(weak), str(selection)
    assert "input[0]" in selection.kept
    assert selection.joint_harm + 2 * selection.joint_stderr < margin


def test_select_features_drops_nothing_from_a_model_that_ignores_its_inputs():
    """A collapsed model (every input closed downstream, awaiting a fine-tune) gives every
    feature a zero rise: that says nothing about the features, so none is dropped."""
    model = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 1))
    with torch.no_grad():
        model[2].weight.zero_()
    gated = lumos.compile(model, example_inputs=(torch.randn(2, 4),))
    x = torch.randn(256, 4)
    selection = lumos.select_features(gated, [(x[i:i + 64], x[i:i + 64, :1]) for i in
                                              range(0, 256, 64)], _per_sample)
    assert selection.total_harm == 0 and selection.dropped == [], str(selection)
    assert lumos.extract(gated.eval()).lumos_kept_inputs == {"input": [0, 1, 2, 3]}


class _TwoInputs(nn.Module):
    def __init__(self):
        super().__init__()
        self.body = nn.Sequential(nn.Linear(6, 32), nn.ReLU(), nn.Linear(32, 1))

    def forward(self, nodes, edges):
        return self.body(torch.cat([nodes, edges], dim=1))


def test_select_features_permutes_the_right_input_of_several():
    g = torch.Generator().manual_seed(1)
    nodes, edges = torch.randn(1200, 3, generator=g), torch.randn(1200, 3, generator=g)
    y = (nodes[:, :1] - edges[:, 1:2]) * 2
    torch.manual_seed(0)
    model = _TwoInputs()
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    for _ in range(300):
        opt.zero_grad()
        nn.functional.mse_loss(model(nodes[:1000], edges[:1000]), y[:1000]).backward()
        opt.step()
    gated = lumos.compile(model, example_inputs=(nodes[:2], edges[:2]))
    held_out = [((nodes[i:i + 50], edges[i:i + 50]), y[i:i + 50]) for i in range(1000, 1200, 50)]
    selection = lumos.select_features(gated, held_out, _per_sample)
    assert sorted(selection.kept) == ["edges[1]", "nodes[0]"], str(selection)
    assert lumos.extract(gated.eval()).lumos_kept_inputs == {"nodes": [0], "edges": [1]}


@pytest.mark.parametrize("kwargs, message", [
    ({"z": 0.0}, "z must be"), ({"z": float("nan")}, "z must be"), ({"repeats": 0}, "repeats"),
    ({"tolerance": 0.0}, "tolerance must be"), ({"tolerance": 1.5}, "tolerance must be"),
    ({"loss_fn": "mse"}, "loss_fn must be callable"), ({"held_out": []}, "no batches"),
    ({"held_out": [torch.randn(4, 8)]}, "pair (inputs, target)"),
    ({"held_out": 3}, "iterable"),
    ({"held_out": [(torch.full((4, 8), float("nan")), torch.zeros(4, 1))]}, "NaN"),
])
def test_select_features_rejects_bad_input(kwargs, message):
    model = nn.Sequential(nn.Linear(8, 4), nn.ReLU(), nn.Linear(4, 1))
    gated = lumos.compile(model, example_inputs=(torch.randn(2, 8),))
    args = {"held_out": [(torch.randn(4, 8), torch.zeros(4, 1))], "loss_fn": _per_sample}
    args.update(kwargs)
    with pytest.raises(lumos.InputError, match=message.replace("(", r"\(").replace(")", r"\)")):
        lumos.select_features(gated, args.pop("held_out"), args.pop("loss_fn"), **args)
    assert next(iter(lumos.gates(gated).values())).log_alpha.min() > 2.0


def test_select_features_needs_gated_inputs():
    model = nn.Sequential(nn.Linear(8, 4), nn.ReLU(), nn.Linear(4, 1))
    gated = lumos.compile(model, example_inputs=(torch.randn(2, 8),), input_dims={"input": None})
    with pytest.raises(lumos.InputError, match="no input of this model is gated"):
        lumos.select_features(gated, [(torch.randn(4, 8), torch.zeros(4, 1))], _per_sample)
