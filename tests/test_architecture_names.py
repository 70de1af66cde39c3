"""Architecture.from_name: the one grammar for naming an architecture (configs, sweeps, studies, CLI)."""

import pytest

import kernelfield as kf

A = kf.Architecture


@pytest.mark.parametrize("name, expected, canonical", [
    ("rnn", A.rnn(5), "rnn"),
    ("dnn", A.dnn(5), "dnn"),
    ("tied_every_2", A.tied_every(5, 2), "tied_every_2"),
    ("tied_every_7", A.tied_every(5, 7), "tied_every_7"),
    ("tied_every:2", A.tied_every(5, 2), "tied_every_2"),
    ({"kind": "tied_every", "k": 3}, A.tied_every(5, 3), "tied_every_3"),
    ({"kind": "tied_every_3"}, A.tied_every(5, 3), "tied_every_3"),
    ({"kind": "dnn"}, A.dnn(5), "dnn"),
    ("share_WUbv", A.rnn(5), "share_WUbv"),
])
def test_every_form_equals_its_classmethod(name, expected, canonical):
    arch = A.from_name(name, 5)
    assert arch == expected and arch.T == 5 and arch.name == canonical


def test_share_shares_only_the_listed_families_and_orders_them():
    uv = A.from_name("share_vU", 4)
    assert uv.name == "share_Uv" and uv == A.from_name("share_Uv", 4)
    assert uv.U_groups == uv.v_groups == (0, 0, 0, 0)
    assert uv.W_groups == uv.b_groups == (0, 1, 2, 3)
    assert A.from_name("share_W", 3) == A.tied_every(3, 3) != A.from_name("share_U", 3)


@pytest.mark.parametrize("name, field, message", [
    ("lstm", "architecture", r"^architecture: unknown architecture 'lstm'; allowed: 'rnn', 'dnn', 'tied_every_K'"),
    ("tied_every_0", "study.architectures", r"^study\.architectures: unknown architecture 'tied_every_0'"),
    ("tied_every", "architecture", r"unknown architecture 'tied_every'"),
    ("tied_every_x", "architecture", r"unknown architecture 'tied_every_x'"),
    ("share_", "architecture", r"unknown architecture 'share_'"),
    ("share_WW", "architecture", r"unknown architecture 'share_WW'"),
    ("share_X", "", r"^unknown architecture 'share_X'; allowed: .*share_<families>"),
    (3, "architecture", r"^architecture: expected an architecture name, got 3"),
    ({"kind": "tied_every"}, "axes.architecture", r"^axes\.architecture\.k: required when kind = 'tied_every'"),
    ({"kind": "tied_every", "k": 0}, "architecture", r"^architecture\.k: must be an integer >= 1, got 0"),
    ({"kind": "rnn", "k": 2}, "architecture", r"^architecture\.k: only used with kind = 'tied_every'"),
    ({"kind": "gru"}, "architecture", r"^architecture\.kind: unknown architecture 'gru'"),
    ({"k": 2}, "architecture", r"^architecture\.kind: required"),
    ({"kind": "rnn", "depth": 2}, "", r"^depth: unknown key of an architecture table; allowed: kind, k"),
])
def test_unknown_names_raise_naming_the_field_and_the_forms(name, field, message):
    with pytest.raises(ValueError, match=message):
        A.from_name(name, 4, field=field)
