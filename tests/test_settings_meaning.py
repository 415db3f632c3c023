"""Every setting means one thing from the command line, a YAML ablation grid, papermill and Python.

Each case is written the way a user writes it on each route: options after ``diffcut-lab segment``, a YAML
mapping (an ablation grid's variant, its ``method_kwargs['diffcut']``, and papermill's parameters, which
reach :meth:`DiffCutConfig.from_dict`), and Python keyword arguments. Every route gives the same
:class:`DiffCutConfig`, or every route refuses it, naming the setting.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from typing import Any

import numpy as np
import pytest
import torch
import yaml

from diffcut_lab import DiffCutConfig, ParameterError, cli
from diffcut_lab import segmentation as core
from diffcut_lab.ablation.grid import GRID_OWNED, SHARED, AblationGrid
from diffcut_lab.commands._options import config_from_args

BIG = "100000000000000000000000000"  # 10**26: overflows int64


@dataclass(frozen=True)
class Case:
    cli: tuple[str, ...]
    yaml: str  # a YAML mapping of the same settings
    python: dict[str, Any] | None  # None: every route refuses
    names: str  # what a refusal must name


# fmt: off
CASES = {
    # None is "none" everywhere; 0 is the number 0 everywhere
    "max-depth 0 is no cut": Case(("--max-depth", "0"), "{max_depth: 0}", {"max_depth": 0}, ""),
    "max-depth none is no limit": Case(("--max-depth", "none"), "{max_depth: none}", {"max_depth": None}, ""),
    "max-depth null is no limit": Case(("--max-depth", "None"), "{max_depth: null}", {"max_depth": None}, ""),
    "max-depth 3": Case(("--max-depth", "3"), "{max_depth: 3}", {"max_depth": 3}, ""),
    "max-depth -1": Case(("--max-depth", "-1"), "{max_depth: -1}", None, "max_depth"),
    "knn 0": Case(("--knn", "0"), "{knn: 0}", None, "knn"),
    "knn 8": Case(("--knn", "8"), "{knn: 8}", {"knn": 8}, ""),
    "knn none": Case(("--knn", "none"), "{knn: none}", {"knn": None}, ""),
    "knn banana": Case(("--knn", "banana"), "{knn: banana}", None, "knn"),
    "refine-max-side 0": Case(("--refine-max-side", "0"), "{refine_max_side: 0}", None, "refine_max_side"),
    "refine-max-side none": Case(("--refine-max-side", "none"), "{refine_max_side: none}",
                                 {"refine_max_side": None}, ""),
    "n-segments 0": Case(("--partition", "kway", "--n-segments", "0"), "{partition: kway, n_segments: 0}", None,
                         "n_segments"),
    "n-segments 4": Case(("--partition", "kway", "--n-segments", "4"), "{partition: kway, n_segments: 4}",
                         {"partition": "kway", "n_segments": 4}, ""),
    "n-segments none": Case(("--partition", "kway", "--n-segments", "none"), "{partition: kway, n_segments: none}",
                            {"partition": "kway", "n_segments": None}, ""),
    "n-segments 100000": Case(("--partition", "kway", "--n-segments", "100000"),
                              "{partition: kway, n_segments: 100000}", None, "n_segments"),
    "n-segments without kway": Case(("--n-segments", "4"), "{n_segments: 4}", None, "n_segments"),
    # combinations that cannot run are refused when the config is built
    "kway with knn": Case(("--partition", "kway", "--knn", "8"), "{partition: kway, knn: 8}", None, "knn"),
    "attention with knn": Case(("--affinity", "attention", "--knn", "8"), "{affinity: attention, knn: 8}", None,
                               "knn"),
    "min-size in paper mode": Case(("--mode", "paper", "--min-size", "4"), "{mode: paper, min_size: 4}", None,
                                   "min_size"),
    # bounds, named once
    "walk-steps 2": Case(("--walk-steps", "2"), "{walk_steps: 2}", {"walk_steps": 2}, ""),
    "walk-steps 0": Case(("--walk-steps", "0"), "{walk_steps: 0}", None, "walk_steps"),
    "walk-steps 10^26": Case(("--walk-steps", BIG), f"{{walk_steps: {BIG}}}", None, "walk_steps"),
    "seed 10^26": Case(("--seed", BIG), f"{{seed: {BIG}}}", None, "seed"),
    "seed -1": Case(("--seed", "-1"), "{seed: -1}", None, "seed"),
    "seed 7": Case(("--seed", "7"), "{seed: 7}", {"seed": 7}, ""),
    "median-size 1000001": Case(("--median-size", "1000001"), "{median_size: 1000001}", None, "median_size"),
    "median-size 5": Case(("--median-size", "5"), "{median_size: 5}", {"median_size": 5}, ""),
    "pamr-iter 0": Case(("--pamr-iter", "0"), "{pamr_iter: 0}", {"pamr_iter": 0}, ""),
    "pamr-iter 10^26": Case(("--pamr-iter", BIG), f"{{pamr_iter: {BIG}}}", None, "pamr_iter"),
    "pamr-dilations 1 2": Case(("--pamr-dilations", "1", "2"), "{pamr_dilations: [1, 2]}",
                               {"pamr_dilations": (1, 2)}, ""),
    "pamr-dilations 10^6": Case(("--pamr-dilations", "1", "1000000"), "{pamr_dilations: [1, 1000000]}", None,
                                "pamr_dilations"),
    "tau banana": Case(("--tau", "banana"), "{tau: banana}", None, "tau"),
    "tau auto": Case(("--tau", "auto"), "{tau: auto}", {"tau": "auto"}, ""),
    "tau 0.3": Case(("--tau", "0.3"), "{tau: 0.3}", {"tau": 0.3}, ""),
    "tau 3": Case(("--tau", "3"), "{tau: 3}", None, "tau"),
    "antialias off": Case(("--no-antialias",), "{antialias: false}", {"antialias": False}, ""),
    "image-size none": Case(("--image-size", "none"), "{image_size: none}", {"image_size": None}, ""),
    "image-size 0": Case(("--image-size", "0"), "{image_size: 0}", None, "image_size"),
}
# fmt: on


def _refused(capsys: pytest.CaptureFixture, fn: Any) -> str | None:
    """The refusal's words if ``fn()`` refuses (ParameterError, or argparse's exit 2), else None."""
    try:
        fn()
    except ParameterError as err:
        return str(err)
    except SystemExit as exc:
        assert exc.code == 2
        return capsys.readouterr().err
    return None


def _cli(case: Case) -> DiffCutConfig:
    args = cli.build_parser().parse_args(["segment", "x.png", *case.cli])
    assert isinstance(args, argparse.Namespace)
    return config_from_args(args)


def _grid_configs(settings: dict[str, Any]) -> list[DiffCutConfig]:
    """The DiffCut config of a grid whose variant sets ``settings``, and of one whose
    ``method_kwargs['diffcut']`` does (the axes they touch, where an axis owns them)."""
    axes = {"tau": "taus", "mode": "modes"}
    grid_keys = {axes[k]: [v] for k, v in settings.items() if k in axes}
    rest = {k: v for k, v in settings.items() if k not in axes}
    grids = [
        AblationGrid.from_dict({"dataset": "synthetic", **grid_keys, "variants": [rest]}),
        AblationGrid.from_dict({"dataset": "synthetic", **grid_keys, "method_kwargs": {"diffcut": rest}}),
    ]
    return [g.configs()[0].diffcut_config() for g in grids]


@pytest.mark.parametrize("name", list(CASES))
def test_a_setting_means_one_thing_on_every_route(name, capsys):
    case = CASES[name]
    settings = yaml.safe_load(case.yaml)
    routes = {
        "command line": lambda: _cli(case),
        "papermill (from_dict)": lambda: DiffCutConfig.from_dict(settings),
        "python": lambda: DiffCutConfig(**(case.python or settings)),
    }
    in_grid = not set(settings) & (set(GRID_OWNED) - {"tau", "mode"} | set(SHARED))
    if in_grid:
        routes["YAML grid"] = lambda: _grid_configs(settings)
    if case.python is None:
        for route, fn in routes.items():
            words = _refused(capsys, fn)
            assert words is not None, f"{route} accepted {name!r}"
            assert case.names in words or f"--{case.names.replace('_', '-')}" in words, (route, words)
            assert "\n" not in words.strip() or route == "command line", (route, words)
        return
    expected = DiffCutConfig(**case.python)
    assert _cli(case) == expected
    assert DiffCutConfig.from_dict(settings) == expected
    if in_grid:
        for cfg in _grid_configs(settings):
            assert {k: getattr(cfg, k) for k in case.python} == case.python


def test_grids_keep_one_configuration_for_one_setting_written_two_ways():
    """``max_depth: none`` and ``max_depth: null`` are one configuration, with one id, in a variant and in
    the grid's shared ``settings``."""
    for where in ("variants", "settings"):
        grids = []
        for v in ("none", "NONE", None):
            setting = {"max_depth": v}
            grids.append(
                AblationGrid.from_dict(
                    {"dataset": "synthetic", where: [setting] if where == "variants" else setting}
                )
            )
        assert len({g.configs()[0].id for g in grids}) == 1, where
        assert all(g.configs()[0].diffcut_config().max_depth is None for g in grids)
    assert AblationGrid(dataset="synthetic", settings={"knn": "none", "pamr_dilations": (1, 2)}).settings == {
        "knn": None, "pamr_dilations": [1, 2]}  # fmt: skip


def test_yaml_numbers_without_a_dot_are_numbers_on_the_axes(tmp_path):
    """PyYAML (YAML 1.1) reads ``1e1`` as a string; on the alphas and taus axes it is the number 10."""
    path = tmp_path / "grid.yaml"
    path.write_text("dataset: synthetic\nalphas: [1e1, 5]\ntaus: [5E-1, auto, 0.5]\n")
    grid = AblationGrid.from_yaml(path)
    assert grid.alphas == (10.0, 5.0) and grid.taus == (0.5, "auto")
    plain = AblationGrid(dataset="synthetic", alphas=[10.0, 5.0], taus=[0.5, "auto"])
    assert [c.id for c in grid.configs()] == [c.id for c in plain.configs()]
    with pytest.raises(ParameterError, match="alphas"):
        AblationGrid(dataset="synthetic", alphas=["ten"])


@pytest.mark.parametrize(
    ("key", "value"), [("seed", int(BIG)), ("seed", -1), ("image_size", 100_000), ("label_size", 100_000)]
)
def test_grid_keys_follow_the_rules_of_the_settings_they_set(key, value):
    """A grid's ``seed``, ``image_size`` and ``label_size`` (the ``mask_size``) are refused when it is
    built, as the settings they set would be, not when a unit runs."""
    with pytest.raises(ParameterError, match=f"'{key}'"):
        AblationGrid(dataset="synthetic", **{key: value})


def test_max_depth_zero_cuts_nothing_and_none_does_not_limit():
    f = torch.from_numpy(np.random.default_rng(0).normal(size=(16, 8, 8)).astype(np.float32))
    f[:, :, 4:] += 3.0
    parse = cli.build_parser().parse_args
    root = core.cut_tree(f, config_from_args(parse(["segment", "x.png", "--max-depth", "0"])))
    free = core.cut_tree(f, config_from_args(parse(["segment", "x.png", "--max-depth", "none"])))
    assert root.n_segments == 1 and root.steps == []
    assert free.n_segments > 1
