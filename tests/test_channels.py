"""Union-find over channel atoms, pins and groups."""
import numpy as np
import pytest

from lumos_fx.channels import ChannelGraph


def test_unify_merges_spaces_into_one_group():
    g = ChannelGraph()
    a, b = g.new_space("a", 4), g.new_space("b", 4)
    g.unify(a, b)
    (group,) = g.groups()
    assert group.size == 4 and [s.name for s in group.spaces] == ["a", "b"]
    assert group.channel_of_atom[int(a[2])] == group.channel_of_atom[int(b[2])]


def test_partial_unify_links_groups_but_keeps_distinct_channels():
    g = ChannelGraph()
    a, b = g.new_space("a", 2), g.new_space("b", 3)
    g.unify(a, b[:2])
    (group,) = g.groups()
    assert group.size == 3


def test_unify_with_fixed_position_pins():
    g = ChannelGraph()
    a = g.new_space("a", 3)
    g.unify(a, np.array([-1, a[1], a[2]]), "fixed")
    assert g.groups()[0].pinned == "fixed"


def test_first_pin_reason_wins_and_other_groups_stay_free():
    g = ChannelGraph()
    a, _ = g.new_space("a", 2), g.new_space("b", 2)
    g.pin(a[:1], "first")
    g.pin(a, "second")
    assert [(grp.name, grp.pinned) for grp in g.groups()] == [("a", "first"), ("b", None)]


def test_unify_rejects_length_mismatch():
    g = ChannelGraph()
    with pytest.raises(ValueError):
        g.unify(g.new_space("a", 2), g.new_space("b", 3))
