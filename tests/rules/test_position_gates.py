"""The finer gate on single flattened positions after a flatten boundary."""
import torch

import lumos_fx as lumos
from tests.models.operators import ConvHead


def _compiled():
    return lumos.compile(ConvHead(), example_inputs=(torch.randn(2, 2, 2, 2, 2),))


def test_flatten_boundary_gets_a_position_gate():
    gated = _compiled()
    assert lumos.gates(gated)["fc:positions"].log_alpha.numel() == 24


def test_closed_positions_of_kept_channels_become_an_index_select():
    gated = _compiled()
    with torch.no_grad():
        lumos.gates(gated)["fc:positions"].log_alpha[[0, 5, 7]] = -6.0   # 0, 5: channel 0, 2
        lumos.gates(gated)["conv"].log_alpha[1] = -6.0                   # 7 is in channel 1
    pruned = lumos.extract(gated)
    assert pruned.conv.weight.shape[0] == 2
    assert pruned.fc.weight.shape[1] == 2 * 8 - 2
    assert "index_select" in pruned.code
    assert lumos.verify(gated, pruned, (torch.randn(5, 2, 2, 2, 2),)) < 1e-6


def test_expected_cost_counts_a_column_once_for_both_gates():
    gated = _compiled()
    cost = gated.lumos_cost
    with torch.no_grad():
        for gate in lumos.gates(gated).values():
            gate.log_alpha.fill_(8.0)
        lumos.gates(gated)["fc:positions"].log_alpha[[0, 5]] = -8.0
        lumos.gates(gated)["conv"].log_alpha[0] = -8.0     # closes positions 0, 3, 6, ...
    params, _ = cost.deterministic(gated)
    pruned = lumos.extract(gated)
    assert int(params) == sum(p.numel() for p in pruned.parameters())
