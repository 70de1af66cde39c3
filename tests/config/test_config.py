import copy
import re
import tomllib
from pathlib import Path

import pytest

import kernelfield as kf
from kernelfield.config import ConfigError, load_config, parse_config

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
EXAMPLE_CONFIGS = sorted(EXAMPLES.glob("*.toml"))


def test_examples_exist():
    # every example config the README names exists (the parametrised loader test below would
    # silently run on none), and a run example named phi_kind_task describes what its file sets
    readme = (EXAMPLES.parent / "README.md").read_text()
    named = set(re.findall(r"examples/[\w/]+\.toml", readme))
    assert "examples/linear_rnn_endpoint.toml" in named
    assert [name for name in sorted(named) if not (EXAMPLES.parent / name).is_file()] == []
    generators = {"endpoint": "endpoint_patterns", "sequential": "integration"}
    runs = [p for p in EXAMPLE_CONFIGS if re.fullmatch(r"[a-z]+_(rnn|dnn)_(endpoint|sequential)\.toml", p.name)]
    assert len(runs) >= 4
    for path in runs:
        phi, kind, task = path.stem.split("_")
        cfg = load_config(path)
        assert (cfg.theory.phi, cfg.build_architecture().name, cfg.task.generator) == (phi, kind, generators[task]), path.name


@pytest.mark.parametrize("path", EXAMPLE_CONFIGS, ids=lambda p: p.name)
def test_example_configs_load(path):
    cfg = load_config(path)
    arch, prior, task = cfg.build_architecture(), cfg.build_prior(), cfg.build_task()
    assert isinstance(arch, kf.Architecture) and isinstance(prior, kf.Prior) and isinstance(task, kf.Task)
    assert task.T == arch.T
    kw = cfg.sample_kwargs()
    assert kw["N"] == cfg.sampling.N and kw["kappa"] == cfg.theory.kappa


def test_builds_match_config():
    cfg = load_config(EXAMPLES / "linear_dnn_endpoint.toml")
    assert cfg.build_architecture() == kf.Architecture.dnn(4)
    assert cfg.build_prior() == kf.Prior(1.0, 1.0, 0.0, 1.0)
    assert cfg.build_task().inputs.shape == (4, 4, 4)


def test_defaults_and_other_kinds():
    cfg = parse_config({"architecture": {"kind": "tied_every", "T": 4, "k": 2},
                        "task": {"generator": "integration", "P": 2, "D": 2}})
    assert cfg.build_architecture() == kf.Architecture.tied_every(4, 2)
    assert cfg.theory.phi == "linear" and cfg.sampling.N == 128
    custom = parse_config({"architecture": {"kind": "custom", "T": 2, "W_groups": [0, 0], "U_groups": [0, 1],
                                            "b_groups": [0, 0], "v_groups": [0, 1]},
                           "task": {"generator": "integration", "P": 2, "D": 2}})
    assert custom.build_architecture().U_groups == (0, 1)


@pytest.mark.parametrize("kind, expected", [
    ("tied_every_2", kf.Architecture.tied_every(4, 2)),
    ("tied_every:2", kf.Architecture.tied_every(4, 2)),
    ("share_vU", kf.Architecture(4, [0, 1, 2, 3], [0] * 4, [0, 1, 2, 3], [0] * 4, name="share_Uv")),
])
def test_architecture_kind_takes_every_name(kind, expected):
    """[architecture] kind is any name of Architecture.from_name; the built name is the canonical one."""
    arch = parse_config({"architecture": {"kind": kind, "T": 4},
                         "task": {"generator": "integration", "P": 2, "D": 2}}).build_architecture()
    assert arch == expected and arch.name == expected.name


def test_phase_architectures_take_every_name():
    cfg = parse_config({**copy.deepcopy(BASE), "phase": {"architectures": ["rnn", "tied_every_2", "tied_every:3",
                                                                           "share_vU"]}})
    built = cfg.phase.build_architectures(4)
    assert [a.name for a in built] == ["rnn", "tied_every_2", "tied_every_3", "share_Uv"]
    assert built[2] == kf.Architecture.tied_every(4, 3)
    with pytest.raises(ConfigError, match=r"phase\.architectures: unknown architecture 'tied_every_0'"):
        parse_config({**copy.deepcopy(BASE), "phase": {"architectures": ["rnn", "tied_every_0"]}})


BASE = tomllib.loads((EXAMPLES / "linear_rnn_endpoint.toml").read_text())


def _set(section, **kw):
    def mod(d):
        d[section].update(kw)
    return mod


def _pop(section, key=None):
    def mod(d):
        if key is None:
            d.pop(section)
        else:
            d[section].pop(key)
    return mod


@pytest.mark.parametrize(
    "modify, expected",
    [
        (_set("architecture", kind="lstm"),
         r"architecture\.kind: unknown architecture 'lstm'; allowed: 'rnn', 'dnn', 'tied_every_K'"
         r".*'share_<families>'.*'custom'"),
        (_set("architecture", kind="share_Xv"), r"architecture\.kind: unknown architecture 'share_Xv'"),
        (_set("architecture", T=0), r"architecture\.T: .*greater than or equal to 1"),
        (_set("architecture", T="four"), r"architecture\.T: .*integer"),
        (_set("architecture", kind="tied_every"), r"architecture\.k: required when kind = 'tied_every'"),
        (_set("architecture", k=2), r"architecture\.k: only used with kind = 'tied_every'"),
        (_set("architecture", kind="custom"), r"architecture\.W_groups.*required when kind = 'custom'"),
        (_set("architecture", kind="custom", W_groups=[0], U_groups=[0] * 4, b_groups=[0] * 4, v_groups=[0] * 4),
         r"architecture\.W_groups: expected a list of 4"),
        (_set("architecture", depth=3), r"architecture\.depth: unknown key.*allowed: kind, T, k"),
        (_set("prior", g=0.0), r"prior\.g: .*greater than 0"),
        (_set("prior", sigma_b=-1.0), r"prior\.sigma_b: .*greater than or equal to 0"),
        (_set("prior", sigma_v="big"), r"prior\.sigma_v: .*number"),
        (_set("task", generator="xor"), r"task\.generator: unknown task generator 'xor'; allowed: .*endpoint_patterns, .*integration"),
        (_set("task", colour=1), r"task\.colour: not an argument of task generator 'endpoint_patterns'; allowed: P, D"),
        (_pop("task", "D"), r"task\.D: required by task generator 'endpoint_patterns'"),
        (_set("task", P=0), r"task\.P: must be an integer >= 1"),
        (_set("task", T=3), r"task\.T: set the number of time steps in \[architecture\]"),
        (_pop("task"), r"task: required but missing"),
        (_set("theory", phi="sigmoid"), r"theory\.phi: unknown nonlinearity 'sigmoid'; allowed: .*linear"),
        (_set("theory", kappa=-0.1), r"theory\.kappa: .*greater than 0"),
        (_set("theory", init="random"), r"theory\.init: .*'auto', 'prior' or 'broken'"),
        (_set("theory", method="closure"),
         r"theory\.method: Input should be 'auto', 'exact', 'particles' or 'gaussian' \(got 'closure'\)"),
        (_set("sampling", N=0), r"sampling\.N: .*greater than or equal to 1"),
        (_set("sampling", num_chains=1.5), r"sampling\.num_chains: .*integer"),
        (lambda d: d.update(sampler={}), r"sampler: unknown key.*allowed: architecture, prior, task, theory, sampling"),
    ],
)
def test_bad_field_gives_clear_error(modify, expected, tmp_path):
    data = copy.deepcopy(BASE)
    modify(data)
    with pytest.raises(ConfigError, match=r"^bad\.toml: invalid configuration: " + ".*" + expected):
        parse_config(data, source="bad.toml")


def test_load_config_file_errors(tmp_path):
    with pytest.raises(ConfigError, match="configuration file not found"):
        load_config(tmp_path / "missing.toml")
    broken = tmp_path / "broken.toml"
    broken.write_text("[architecture\nkind = 'rnn'\n")
    with pytest.raises(ConfigError, match=r"broken\.toml: not valid TOML"):
        load_config(broken)
    bad = tmp_path / "bad.toml"
    bad.write_text('[architecture]\nkind = "rnn"\nT = -1\n[task]\ngenerator = "integration"\nP = 2\n')
    with pytest.raises(ConfigError, match=r"bad\.toml: invalid configuration: architecture\.T"):
        load_config(bad)


def test_theory_method_from_toml():
    """theory = { phi = "erf", method = "gaussian" }: the Gaussian closure, passed on to kf.solve."""
    data = copy.deepcopy(BASE)
    data["theory"] = tomllib.loads('theory = { phi = "erf", method = "gaussian" }')["theory"]
    kw = parse_config(data).solve_kwargs()
    assert (kw["phi"], kw["method"]) == ("erf", "gaussian")
    assert parse_config(copy.deepcopy(BASE)).solve_kwargs()["method"] == "auto"
