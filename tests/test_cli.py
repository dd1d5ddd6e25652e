"""The ``lumos-fx`` command line: ``demo`` end to end (short) and ``version``."""
from __future__ import annotations

import pytest
import torch

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
