"""``lumos.deploy``: the exported program (and AOTInductor package) of a pruned model,
checked against it, reloaded from disk, timed; and ``lumos-fx deploy``."""
from __future__ import annotations

import json
import shutil

import pytest
import torch
from torch import nn

import lumos_fx as lumos
from lumos_fx.cli import main


def _gated(closed_inputs=(1, 4)):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(6, 16), nn.ReLU(), nn.Linear(16, 16), nn.ReLU(),
                          nn.Linear(16, 2))
    gated = lumos.compile(model, example_inputs=(torch.randn(8, 6),))
    with torch.no_grad():
        for gate in lumos.gates(gated).values():
            if gate.size == 6:
                gate.log_alpha[list(closed_inputs)] = -6.0
            else:
                gate.log_alpha[::3] = -6.0
    return model, gated


def test_deploy_writes_a_dynamic_program_that_matches_the_pruned_model(tmp_path):
    model, gated = _gated()
    before = {k: v.clone() for k, v in gated.state_dict().items()}
    gated.train()
    result = lumos.deploy(gated, path=tmp_path / "out", measure=False)
    assert gated.training and all(torch.equal(before[k], v) for k, v in gated.state_dict().items())
    assert result.program == tmp_path / "out" / "model.pt2" and result.package is None
    assert set(result.max_abs_diff) == {"exported program, batch 8", "exported program, batch 19"}
    assert max(result.max_abs_diff.values()) < 1e-5
    pruned = lumos.extract(gated)
    program = torch.export.load(str(result.program)).module()
    for batch in (1, 3, 50):
        x = torch.randn(batch, 6)
        torch.testing.assert_close(program(x), pruned(x))
        torch.testing.assert_close(program(x), gated.eval()(x))
    summary = json.loads((tmp_path / "out" / "deploy.json").read_text())
    assert summary["kept_inputs"] == {"input": [0, 2, 3, 5]}
    assert summary["latency_us"] == {}


def test_deploy_measures_original_pruned_and_artifact_at_two_batch_sizes(tmp_path):
    model, gated = _gated(closed_inputs=(4, 5))
    pruned = lumos.extract(gated)
    result = lumos.deploy(pruned, (torch.randn(4, 6),), tmp_path, original=model,
                          large_batch=64, threads=1, min_run_time=0.01)
    assert list(result.latency_us) == ["original eager", "pruned eager", "exported program"]
    for row in result.latency_us.values():
        assert set(row) == {"batch 1", "batch 64"} and all(v > 0 for v in row.values())
    text = str(result)
    assert "original eager" in text and "batch 64" in text and "model.pt2" in text
    assert model.training, "the original model's mode is left as it was"


def test_a_batch_of_one_still_exports_a_dynamic_batch(tmp_path):
    _, gated = _gated()
    pruned = lumos.extract(gated)
    result = lumos.deploy(pruned, (torch.randn(1, 6),), tmp_path, measure=False)
    assert "exported program, batch 5" in result.max_abs_diff
    x = torch.randn(7, 6)
    torch.testing.assert_close(result.load()(x), pruned(x))


class Gather(nn.Module):
    """Inputs without a shared batch dim: node features and an index over them."""

    def __init__(self):
        super().__init__()
        self.lin = nn.Linear(3, 4)

    def forward(self, x, index):
        return self.lin(x).index_select(0, index)


def test_inputs_without_a_shared_batch_dim_are_checked_and_timed_as_given(tmp_path):
    inputs = (torch.randn(5, 3), torch.tensor([0, 4, 4, 2, 1, 3, 0]))
    result = lumos.deploy(Gather(), inputs, tmp_path, min_run_time=0.01)
    assert list(result.max_abs_diff) == ["exported program, example inputs"]
    assert set(result.latency_us["pruned eager"]) == {"example inputs"}


@pytest.mark.parametrize("kwargs, message", [
    ({"aot": "yes"}, "aot must be"), ({"large_batch": 1}, "large_batch"),
    ({"threads": 0}, "threads"), ({"min_run_time": 0}, "min_run_time"),
    ({"original": "model"}, "original"), ({"example_inputs": 3}, "example_inputs"),
    ({"inductor_configs": ["max_autotune"]}, "inductor_configs must be a dict"),
    ({"inductor_configs": {"max_autotune": True}}, "pass aot=True"),
])
def test_options_are_validated(tmp_path, kwargs, message):
    _, gated = _gated()
    with pytest.raises(lumos.InputError, match=message):
        lumos.deploy(gated, path=tmp_path, **kwargs)


def test_an_extracted_model_needs_example_inputs_and_path_must_be_a_directory(tmp_path):
    _, gated = _gated()
    with pytest.raises(lumos.InputError, match="example_inputs"):
        lumos.deploy(lumos.extract(gated), path=tmp_path)
    (tmp_path / "file").write_text("x")
    with pytest.raises(lumos.InputError, match="not a directory"):
        lumos.deploy(gated, path=tmp_path / "file")
    with pytest.raises(lumos.InputError, match="nn.Module"):
        lumos.deploy("model", (torch.randn(2, 6),), tmp_path)


@pytest.mark.skipif(not (shutil.which("g++") or shutil.which("clang++")),
                    reason="AOTInductor needs a C++ compiler")
def test_aot_package_matches_the_pruned_model(tmp_path):
    _, gated = _gated()
    result = lumos.deploy(gated, path=tmp_path, aot=True, measure=False)
    assert result.package == tmp_path / "model_aoti.pt2" and result.package.is_file()
    assert {"AOTInductor, batch 8", "AOTInductor, batch 19"} <= set(result.max_abs_diff)
    runner = torch._inductor.aoti_load_package(str(result.package))
    deployed = result.load()
    assert isinstance(deployed, lumos.DeployedModel)
    x = torch.randn(11, 6)
    torch.testing.assert_close(runner(x), lumos.extract(gated)(x), rtol=1e-4, atol=1e-5)
    assert torch.equal(deployed(x), runner(x))


class TwoInputs(nn.Module):
    def __init__(self):
        super().__init__()
        self.a, self.b = nn.Linear(3, 4), nn.Linear(2, 4)

    def forward(self, x, extra):
        return {"sum": self.a(x) + self.b(extra["y"]), "x": x}


@pytest.mark.skipif(not (shutil.which("g++") or shutil.which("clang++")),
                    reason="AOTInductor needs a C++ compiler")
def test_deployed_model_takes_nested_inputs_and_returns_the_package_outputs(tmp_path):
    inputs = (torch.randn(4, 3), {"y": torch.randn(4, 2)})
    result = lumos.deploy(TwoInputs(), inputs, tmp_path, aot=True, measure=False)
    deployed, runner = lumos.DeployedModel(result.package), torch._inductor.aoti_load_package(
        str(result.package))
    x, extra = torch.randn(7, 3), {"y": torch.randn(7, 2)}
    got, expected = deployed(x, extra), runner(x, extra)
    assert set(got) == {"sum", "x"} and all(torch.equal(got[k], expected[k]) for k in got)
    with pytest.raises(lumos.InputError, match="no AOTInductor package"):
        lumos.DeployedModel(tmp_path / "missing.pt2")


def test_cli_deploys_a_saved_gated_model(tmp_path, capsys):
    model, gated = _gated()
    torch.save({"model": gated, "original": model}, tmp_path / "gated.pt")
    out = tmp_path / "deployed"
    assert main(["deploy", str(tmp_path / "gated.pt"), "--out", str(out), "--large-batch", "32",
                 "--threads", "1"]) == 0
    text = capsys.readouterr().out
    assert "original eager" in text and "batch 32" in text
    assert (out / "model.pt2").is_file() and (out / "deploy.json").is_file()


def test_cli_refuses_files_without_a_gated_model(tmp_path, capsys):
    torch.save({"weights": torch.ones(2)}, tmp_path / "state.pt")
    assert main(["deploy", str(tmp_path / "state.pt"), "--out", str(tmp_path / "o")]) == 2
    assert "holds no gated model" in capsys.readouterr().err
    assert main(["deploy", str(tmp_path / "missing.pt"), "--no-measure"]) == 2
    _, gated = _gated()
    torch.save(gated, tmp_path / "gated.pt")
    assert main(["deploy", str(tmp_path / "gated.pt"), "--out", str(tmp_path / "o"),
                 "--large-batch", "0"]) == 2
    assert "large_batch" in capsys.readouterr().err
