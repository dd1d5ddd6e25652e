"""The ``lumos-fx`` command line: ``demo`` end to end (short), ``report``, ``bench`` and
``version``."""
from __future__ import annotations

import json

import pytest
import torch
from torch import nn

import lumos_fx as lumos

import lumos_fx
from lumos_fx.cli import main
from lumos_fx.demo import FEATURE_NAMES, INFORMATIVE, make_surrogate_data


def test_demo_runs_prunes_and_exports(tmp_path, capsys):
    out = tmp_path / "demo"
    assert main(["demo", "--steps", "300", "--seed", "0", "--out", str(out), "--no-progress"]) == 0
    text = capsys.readouterr().out
    assert "lumos_fx report" in text
    kept_line = next(line for line in text.splitlines() if line.startswith("kept features"))
    for name in INFORMATIVE:
        assert name in kept_line, kept_line
    assert "max relative error" in text
    exported = out / "pruned.pt2"
    assert exported.is_file() and exported.stat().st_size > 0
    program = torch.export.load(str(exported))
    x = make_surrogate_data(37, seed=5).x  # a batch size other than the export example's
    assert program.module()(x).shape == (37, 2)
    page = out / "report.html"
    assert f"report page           {page}" in text
    html = page.read_text(encoding="utf-8")
    assert "<svg" in html and "velocity_x" in html and "expected kept fraction" in html


def test_surrogate_data_is_standardised_and_named():
    data = make_surrogate_data(2000, seed=3)
    assert data.x.shape == (2000, len(FEATURE_NAMES)) and data.y.shape == (2000, 2)
    assert set(INFORMATIVE) <= set(FEATURE_NAMES) and len(FEATURE_NAMES) == 20
    torch.testing.assert_close(data.x.mean(0), torch.zeros(20), atol=1e-4, rtol=0)
    torch.testing.assert_close(data.x.std(0), torch.ones(20), atol=1e-3, rtol=0)
    again = make_surrogate_data(2000, seed=3)
    assert torch.equal(data.x, again.x) and torch.equal(data.y, again.y)


def test_version(capsys):
    assert main(["version"]) == 0
    out = capsys.readouterr().out.strip()
    assert out.startswith("lumos-fx ") and out.split()[-1] != ""
    assert lumos_fx.__version__ in out or out.split()[-1][0].isdigit()


def test_bad_usage_exits_with_argparse_error():
    with pytest.raises(SystemExit) as info:
        main([])
    assert info.value.code == 2


def test_bench_subcommand_hands_its_options_to_the_benchmark_cli(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["bench", "--help"])
    assert exit_info.value.code == 0
    out = capsys.readouterr().out
    assert "--quick" in out and "cosmoflow" in out


def _saved_gated(tmp_path):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(3, 6), nn.ReLU(), nn.Linear(6, 1))
    gated = lumos.compile(model, example_inputs=(torch.randn(2, 3),),
                          feature_names=["rho", "u", "p"])
    monitor = lumos.TrainingMonitor(gated, every=1, progress=False)
    monitor.step(loss=1.0)
    monitor.step(loss=0.5)
    with torch.no_grad():
        lumos.gates(gated)["input"].log_alpha[1] = -6.0
    return gated


def test_report_command_writes_html_and_json_of_a_saved_model(tmp_path, capsys):
    gated = _saved_gated(tmp_path)
    torch.save(gated, tmp_path / "gated.pt")
    html, js = tmp_path / "r.html", tmp_path / "r.json"
    assert main(["report", str(tmp_path / "gated.pt"), "--html", str(html), "--json", str(js)]) == 0
    out = capsys.readouterr().out
    assert "lumos_fx report: Sequential" in out and f"wrote {html}" in out
    data = json.loads(js.read_text())
    assert data == json.loads(lumos.report(gated).to_json())
    assert data["inputs"]["input"] == {"kept": ["rho", "p"], "dropped": ["u"]}
    assert len(data["history"]) == 2
    page = html.read_text()
    assert "<svg" in page and ">u<" in page


def test_report_command_finds_the_model_in_a_checkpoint_dict(tmp_path, capsys):
    gated = _saved_gated(tmp_path)
    history = [{"step": 7, "kept_params": 0.5}]
    torch.save({"epoch": 3, "model": gated, "history": history}, tmp_path / "ckpt.pt")
    assert main(["report", str(tmp_path / "ckpt.pt"), "--json", str(tmp_path / "r.json"),
                 "--quiet"]) == 0
    assert "lumos_fx report" not in capsys.readouterr().out
    assert json.loads((tmp_path / "r.json").read_text())["history"] == history


def test_report_command_explains_what_it_cannot_read(tmp_path, capsys):
    gated = _saved_gated(tmp_path)
    torch.save(gated.state_dict(), tmp_path / "weights.pt")
    assert main(["report", str(tmp_path / "weights.pt")]) == 2
    assert "holds a state_dict" in capsys.readouterr().err
    assert main(["report", str(tmp_path / "missing.pt")]) == 2
    assert "no such file" in capsys.readouterr().err
    (tmp_path / "junk.pt").write_text("not a checkpoint")
    assert main(["report", str(tmp_path / "junk.pt")]) == 2
    assert "cannot load" in capsys.readouterr().err


def test_bench_outside_a_source_checkout_says_so(tmp_path, monkeypatch, capsys):
    import lumos_fx.cli as cli

    fake = tmp_path / "site-packages" / "lumos_fx" / "cli.py"
    monkeypatch.setattr(cli, "__file__", str(fake))
    assert cli.main(["bench", "--help"]) == 2
    assert "source checkout" in capsys.readouterr().err
