"""The declarative ablation grid and its expansion into configurations and work units.

A grid is model x layer x timestep x method, and for DiffCut also alpha x tau x mode, each crossed with
the refinement. Every point is a :class:`~diffcut_lab.config.DiffCutConfig` (:meth:`Config.diffcut_config`):
the axes name its fields, ``preset`` chooses the base (the defaults, or the published pipeline), and
``method_kwargs["diffcut"]`` overrides its other fields (``min_size``, ``pamr_iter``, ...). The evaluation
geometry is the published one whatever the preset: the centred square of side ``min(H, W) - 1``, labels
and predictions at ``label_size``. The unit of work is one (model, image): every requested layer and timestep of that image
is captured together, and every configuration of that image is computed from those features, so alpha,
tau, mode, refine and method sweeps cost no extra UNet pass, and a tau sweep costs one recursion (the
tree at the largest tau is pruned for the others).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from ..config import PAPER_MASK_SIZE, DiffCutConfig
from ..errors import ParameterError
from ..options import AUTO, MATCHES, METHODS, REFINES
from ..validation import check_int, is_int

__all__ = [
    "DATA_KEYS", "METHODS", "PRESETS", "REFINES", "AblationGrid", "Config", "config_id", "stable_hash", "tau_setting",
    "tau_text",
]  # fmt: skip


#: configuration columns, in table order (everything that, with the image, determines one result row)
CONFIG_COLUMNS = (
    "model", "layer", "timestep", "method", "alpha", "tau", "mode", "refine", "params", "seed",
    "image_size", "label_size", "prompt", "preset", "settings", "match", "data",
)  # fmt: skip

#: grid keys that choose the images and labels: a results directory holds one such choice
DATA_KEYS = ("dataset", "root", "dataset_kwargs")

#: base settings of a grid: DiffCutConfig's defaults, or the published evaluation pipeline
PRESETS = ("default", "paper")

#: grid axes -> the DiffCutConfig field each one sweeps
AXES = {"layers": "layer", "timesteps": "timestep", "alphas": "alpha", "taus": "tau", "modes": "mode",
        "refines": "refine"}  # fmt: skip

#: DiffCutConfig fields the grid itself sets (axes, grid keys, the evaluation geometry); ``settings`` may
#: set any other for every point
GRID_OWNED = {
    **{f: f"the {a!r} axis" for a, f in AXES.items()},
    "seed": "the grid key 'seed'", "image_size": "the grid key 'image_size'",
    "mask_size": "the grid key 'label_size'", "policy": "the evaluation protocol (always the centre crop)",
    "refine_max_side": "the evaluation protocol (labels refined at label_size)",
}  # fmt: skip
#: ... and method_kwargs["diffcut"] may not set the input settings either (every method shares the features)
SHARED = {"antialias": "the grid key 'settings'", "noise_device": "the grid key 'settings'"}

_DEFAULT = DiffCutConfig()


def _preset(name: str) -> DiffCutConfig:
    return DiffCutConfig.paper() if name == "paper" else DiffCutConfig()


def stable_hash(obj: Any, n: int = 16) -> str:
    """A short hex digest of a JSON-serialisable object (key order independent)."""
    text = json.dumps(obj, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:n]


def _is_text(v: Any) -> bool:
    return isinstance(v, str)


def _is_number(v: Any) -> bool:
    return is_int(v) or isinstance(v, float)


def _is_number_or_text(v: Any) -> bool:
    return _is_number(v) or isinstance(v, str)


def _read_number(v: Any) -> Any:
    """A number as a float, and a number written as text too: YAML 1.1 (PyYAML) reads ``1e1`` or ``1E-1``
    (no dot) as a string. Other text (``"auto"``) is kept, stripped and in lower case, for the axis to judge."""
    if isinstance(v, str):
        try:
            return float(v)
        except ValueError:
            return v.strip().lower()
    return float(v) if _is_number(v) else v


def _tuple(
    value: Any,
    name: str,
    accepts: Callable[[Any], bool],
    expected: str,
    read: Callable[[Any], Any] = lambda v: v,
) -> tuple:
    """An axis as a tuple of distinct values (as ``read`` gives them) in their order (a repeated value is
    one configuration); a value ``accepts`` refuses raises ParameterError saying what was ``expected``."""
    if value is None:
        raise ParameterError(f"grid field {name!r} must not be empty")
    items = tuple(value) if isinstance(value, (list, tuple)) else (value,)
    if not items:
        raise ParameterError(f"grid field {name!r} must list at least one value")
    for v in items:
        if not accepts(v):
            raise ParameterError(f"grid field {name!r} holds {v!r}; expected {expected}")
    return tuple(dict.fromkeys(read(v) for v in items))


def _as_read(config: DiffCutConfig, values: Mapping[str, Any]) -> dict[str, Any]:
    """``values``' DiffCutConfig fields as ``config`` read them, in plain JSON-able form (tuples as lists)."""
    plain = config.to_dict()
    return {k: plain[k] for k in values}


def _count(value: Any, name: str, *, minimum: int, optional: bool = False) -> int | None:
    """A grid key that counts (``null`` allowed where ``optional``) as an int."""
    if optional and value is None:
        return None
    return check_int(value, f"grid field {name!r}", minimum=minimum, hint="Or null." if optional else "")


@dataclass(frozen=True)
class Config:
    """One configuration of the grid (everything but the image)."""

    model: str
    layer: str
    timestep: int
    method: str
    alpha: float
    tau: float
    mode: str
    refine: str
    params: str  # JSON of the method's extra keyword arguments
    seed: int
    image_size: int
    label_size: int
    prompt: str
    preset: str = "default"
    settings: str = "{}"  # JSON of DiffCutConfig fields every point shares
    match: str = "reference"
    data: str = ""  # hash of the grid's DATA_KEYS: rows of other images or labels never share an id

    @property
    def id(self) -> str:
        """Stable identifier of the configuration (a hash of its fields)."""
        return config_id(self.to_dict())

    def to_dict(self) -> dict[str, Any]:
        """Plain-dict form (table columns)."""
        return {f.name: getattr(self, f.name) for f in fields(self)}

    def diffcut_config(self) -> DiffCutConfig:
        """The :class:`~diffcut_lab.config.DiffCutConfig` of this point: what ``DiffCut(bb, ...)`` runs
        to give the same labels (the DiffCut fields are the base's for another method)."""
        base = _preset(self.preset).replace(**json.loads(self.settings))
        changes: dict[str, Any] = dict(
            layer=self.layer, timestep=self.timestep, refine=self.refine, seed=self.seed,
            image_size=self.image_size or None, mask_size=self.label_size, policy="center_crop",
            refine_max_side=None,
        )  # fmt: skip
        if self.method == "diffcut":
            changes.update(
                json.loads(self.params), alpha=self.alpha, tau=tau_setting(self.tau), mode=self.mode
            )
        return base.replace(**changes)


def tau_setting(tau: float) -> float | str:
    """A DiffCut row's ``tau`` column as the setting: NaN is ``"auto"`` (the column is numeric)."""
    return AUTO if tau != tau else float(tau)


def tau_text(tau: float) -> str:
    """A DiffCut row's ``tau`` as text for tables and plots: ``"auto"`` or the number."""
    return AUTO if tau != tau else f"{tau:g}"


def _yaml_problem(err: Exception) -> str:
    """A YAML error on one line: what went wrong and where (line and column, counted from 1)."""
    mark = getattr(err, "problem_mark", None) or getattr(err, "context_mark", None)
    what = getattr(err, "problem", None) or getattr(err, "context", None) or str(err)
    where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
    return " ".join(f"{what}{where}".split())


def config_id(cfg: Mapping[str, Any]) -> str:
    """Hash of the configuration columns (NaN alpha/tau of non-DiffCut methods hash alike)."""
    key = {}
    for c in CONFIG_COLUMNS:
        v = cfg[c]
        if isinstance(v, float) and v != v:  # NaN
            v = None
        elif isinstance(v, float) and v.is_integer() and c in ("alpha", "tau"):
            v = float(v)
        key[c] = v
    return stable_hash(key)


@dataclass(frozen=True)
class AblationGrid:
    """A declarative ablation study (what :func:`~diffcut_lab.ablation.run_ablation` runs).

    Parameters
    ----------
    dataset : str
        A :func:`~diffcut_lab.datasets.load_dataset` name ("synthetic", "voc", ...).
    models : sequence of str
        Backbone sources ("pocket", "segmind/SSD-1B", a local diffusers directory).
    layers : sequence of str
        Layer names or aliases ("diffcut", exact hook names); one feature map each.
    timesteps : sequence of int
        Noising timesteps.
    alphas, taus : sequence of float
        Affinity exponents and NCut thresholds (DiffCut only); a tau may be ``"auto"`` (the automatic
        stopping rule; its rows hold NaN in the numeric ``tau`` column, :func:`tau_text` shows it).
    refines : sequence of {"none", "median", "pamr"}
        Refinement after upsampling to the label size.
    methods : sequence of {"diffcut", "kmeans", "spectral", "diffseg"}
        Segmenters run on the same features.
    modes : sequence of {"fixed", "paper"}
        Recursive NCut variants (DiffCut only).
    limit : int, optional
        First ``limit`` images of the dataset.
    seed : int
        Noise seed of the feature capture (and of any randomised method).
    image_size : int, optional
        Model input side; None = the backbone's native size (1024 for SSD-1B).
    label_size : int
        Evaluation side of labels and predictions (128 in the paper).
    root : str, optional
        Dataset directory (the six benchmarks).
    dataset_kwargs : mapping
        More loader arguments (``split``, ``quirks``, ``n``, ``size``, ...).
    method_kwargs : mapping
        Per method, extra keyword arguments (``{"kmeans": {"n_clusters": 6}}``); for ``"diffcut"``, any
        :class:`~diffcut_lab.config.DiffCutConfig` field the grid does not set itself
        (``{"diffcut": {"min_size": 20, "pamr_iter": 30}}``).
    variants : sequence of mapping
        DiffCut variants crossed with the other axes: each one a set of DiffCutConfig fields over
        ``method_kwargs["diffcut"]`` (``[{}, {"affinity": "attention", "walk_steps": 2}, {"partition":
        "kway"}]``); the variant is part of the row's ``params``. Default: one, the plain DiffCut.
    prompt : str
        Conditioning prompt of the capture (the paper's is empty).
    dtype, device : str, optional
        Backbone dtype ("float16", "bfloat16", "float32") and device; None = load_backbone's defaults.
    threads : int or None
        Intra-op CPU threads (torch, BLAS, OpenMP) every unit runs with, wherever it runs. Float sums
        depend on the thread count, so one fixed value is what makes the rows bit-identical whichever
        executor ran them (default 1: parallelism comes from running units side by side; None leaves
        each process's setting alone).
    name : str
        A label for the study (plots, file names).
    preset : {"default", "paper"}
        Base settings of every point: :class:`~diffcut_lab.config.DiffCutConfig`'s defaults, or
        ``DiffCutConfig.paper()`` (the published pipeline: no antialias, noise on the model's device,
        PAMR guided by the model input); ``settings``, the axes and the keys above override them.
    settings : mapping
        DiffCutConfig fields every point (of every method) shares, over the preset
        (``{"antialias": false, "pamr_iter": 30}``); not the fields the axes and keys above set.
    match : {"reference", "present"}
        Hungarian matching of the score (:func:`~diffcut_lab.metrics.hungarian_miou`): the published one
        (default, comparable with the paper's tables) or present classes only.
    """

    dataset: str
    models: tuple[str, ...] = ("pocket",)
    layers: tuple[str, ...] = (_DEFAULT.layer,)
    timesteps: tuple[int, ...] = (_DEFAULT.timestep,)
    alphas: tuple[float, ...] = (_DEFAULT.alpha,)
    taus: tuple[float, ...] = (_DEFAULT.tau,)
    refines: tuple[str, ...] = (_DEFAULT.refine,)
    methods: tuple[str, ...] = ("diffcut",)
    modes: tuple[str, ...] = (_DEFAULT.mode,)
    limit: int | None = None
    seed: int = _DEFAULT.seed
    image_size: int | None = None
    label_size: int = PAPER_MASK_SIZE
    root: str | None = None
    dataset_kwargs: Mapping[str, Any] = field(default_factory=dict)
    method_kwargs: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    variants: tuple[Mapping[str, Any], ...] = ({},)
    prompt: str = ""
    dtype: str | None = None
    device: str | None = None
    threads: int | None = 1
    name: str = "ablation"
    preset: str = "default"
    settings: Mapping[str, Any] = field(default_factory=dict)
    match: str = "reference"

    def __post_init__(self) -> None:
        set_ = object.__setattr__
        set_(self, "models", _tuple(self.models, "models", _is_text, "a name"))
        set_(self, "layers", _tuple(self.layers, "layers", _is_text, "a layer name"))
        set_(self, "timesteps", _tuple(self.timesteps, "timesteps", is_int, "an integer", int))
        set_(self, "alphas", _tuple(self.alphas, "alphas", _is_number_or_text, "a number", _read_number))
        set_(self, "taus", _tuple(self.taus, "taus", _is_number_or_text, "a number or 'auto'", _read_number))
        for name in ("refines", "methods", "modes"):
            set_(self, name, _tuple(getattr(self, name), name, _is_text, "a name"))
        bad = [m for m in self.methods if m not in METHODS]
        if bad:
            raise ParameterError(f"grid field 'methods' has {bad}; allowed values are {list(METHODS)}")
        for key, value, allowed in (("preset", self.preset, PRESETS), ("match", self.match, MATCHES)):
            if value not in allowed:
                raise ParameterError(f"grid field {key!r} is {value!r}; allowed values are {list(allowed)}")
        set_(self, "limit", _count(self.limit, "limit", minimum=1, optional=True))
        set_(self, "threads", _count(self.threads, "threads", minimum=1, optional=True))
        set_(self, "label_size", _count(self.label_size, "label_size", minimum=1))
        set_(self, "image_size", _count(self.image_size, "image_size", minimum=1, optional=True))
        set_(self, "seed", _count(self.seed, "seed", minimum=0))
        for key in ("dataset_kwargs", "method_kwargs", "settings"):
            if not isinstance(getattr(self, key), Mapping):
                raise ParameterError(f"grid field {key!r} must be a mapping; got {getattr(self, key)!r}")
        unknown = set(self.method_kwargs) - set(METHODS)
        if unknown:
            raise ParameterError(
                f"method_kwargs names unknown methods {sorted(unknown)}; known: {list(METHODS)}"
            )
        for method, kwargs in self.method_kwargs.items():
            if not isinstance(kwargs, Mapping):
                raise ParameterError(
                    f"method_kwargs[{method!r}] must be a mapping of keyword arguments (e.g. method_kwargs: "
                    f"{{{method}: {{name: value}}}}); got {kwargs!r}"
                )
        set_(self, "dataset_kwargs", dict(self.dataset_kwargs))
        set_(self, "method_kwargs", {k: dict(v) for k, v in self.method_kwargs.items()})
        set_(self, "settings", dict(self.settings))
        variants = self.variants if isinstance(self.variants, (list, tuple)) else None
        if not variants or not all(isinstance(v, Mapping) for v in variants):
            raise ParameterError(
                f"grid field 'variants' must be a non-empty list of mappings; got {self.variants!r}"
            )
        set_(self, "variants", tuple(dict(v) for v in variants))
        self._check_settings()

    def _check_settings(self) -> None:
        """Every axis value and DiffCut override is a valid DiffCutConfig setting (before any work).

        ``settings``, ``method_kwargs["diffcut"]`` and the variants are read by
        :class:`~diffcut_lab.config.DiffCutConfig` and kept as it reads them (``max_depth: none`` is ``None``,
        as on the command line), so one setting written two ways is one configuration with one id. The grid
        keys ``seed``, ``image_size`` and ``label_size`` obey the rules of the fields they set."""
        base = _preset(self.preset)
        for key, name in (("seed", "seed"), ("image_size", "image_size"), ("label_size", "mask_size")):
            try:
                base.replace(**{name: getattr(self, key)})
            except ParameterError as err:
                raise ParameterError(f"grid field {key!r}: {err}") from None
        diffcut_owned = {**GRID_OWNED, **SHARED}
        for key, values, owner in (
            ("settings", self.settings, GRID_OWNED),
            ("method_kwargs['diffcut']", self.method_kwargs.get("diffcut", {}), diffcut_owned),
        ):
            owned = sorted(set(values) & set(owner))
            if owned:
                where = "; ".join(f"{k!r} is set by {owner[k]}" for k in owned)
                raise ParameterError(f"{key} cannot set {owned}: {where}")
            try:
                base = base.replace(**values)
            except ParameterError as err:
                raise ParameterError(f"{key}: {err}") from None
            if key == "settings":
                object.__setattr__(self, "settings", _as_read(base, self.settings))
        if "diffcut" in self.method_kwargs:
            self.method_kwargs["diffcut"] = _as_read(base, self.method_kwargs["diffcut"])
        variants = []
        for i, variant in enumerate(self.variants):
            owned = sorted(set(variant) & set(diffcut_owned))
            if owned:
                where = "; ".join(f"{k!r} is set by {diffcut_owned[k]}" for k in owned)
                raise ParameterError(f"variants[{i}] cannot set {owned}: {where}")
            try:
                for mode in self.modes:
                    read = base.replace(**variant, mode=mode)
            except ParameterError as err:
                raise ParameterError(f"variants[{i}] (with mode {mode!r}): {err}") from None
            variants.append(_as_read(read, variant))
        object.__setattr__(self, "variants", tuple(variants))
        for axis, name in AXES.items():
            for value in getattr(self, axis):
                try:
                    base.replace(**{name: value})
                except ParameterError as err:
                    raise ParameterError(f"grid field {axis!r}: {err}") from None

    # -- construction ------------------------------------------------------------------------------

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> AblationGrid:
        """Build from a mapping (YAML/JSON); unknown keys are an error that lists the known ones."""
        known = {f.name for f in fields(cls)}
        unknown = set(data) - known
        if unknown:
            raise ParameterError(f"unknown grid keys {sorted(unknown)}; known keys are {sorted(known)}")
        if "dataset" not in data:
            raise ParameterError("a grid needs 'dataset' (e.g. dataset: synthetic)")
        return cls(**dict(data))

    @classmethod
    def from_yaml(cls, path: str | Path) -> AblationGrid:
        """Read a grid from a YAML file (keys as the dataclass fields)."""
        import yaml

        p = Path(path)
        if not p.is_file():
            raise ParameterError(f"no grid file at {p}")
        try:
            data = yaml.safe_load(p.read_text(encoding="utf-8")) or {}
        except UnicodeDecodeError as err:
            raise ParameterError(
                f"{p} is not UTF-8 text (byte {err.object[err.start]:#04x} at offset {err.start}); save the grid "
                "file as UTF-8"
            ) from None
        except yaml.YAMLError as err:
            raise ParameterError(f"{p} is not valid YAML: {_yaml_problem(err)}") from None
        except OSError as err:
            raise ParameterError(f"cannot read the grid file {p}: {err.strerror or err}") from None
        if not isinstance(data, Mapping):
            raise ParameterError(f"{p} must hold a mapping of grid keys, got {type(data).__name__}")
        return cls.from_dict(data)

    def to_dict(self) -> dict[str, Any]:
        """Plain-dict form (round-trips through :meth:`from_dict` and YAML)."""
        out: dict[str, Any] = {}
        for f in fields(self):
            v = getattr(self, f.name)
            out[f.name] = list(v) if isinstance(v, tuple) else (dict(v) if isinstance(v, Mapping) else v)
        return out

    def to_yaml(self, path: str | Path) -> Path:
        """Write the grid as YAML."""
        import yaml

        p = Path(path)
        p.write_text(yaml.safe_dump(self.to_dict(), sort_keys=False))
        return p

    # -- expansion ---------------------------------------------------------------------------------

    def data_key(self) -> str:
        """A hash of what chooses the images and labels (dataset, root, loader arguments)."""
        return stable_hash({k: getattr(self, k) for k in DATA_KEYS})

    def method_params(self, method: str, variant: Mapping[str, Any] | None = None) -> str:
        """The method's extra keyword arguments (and a DiffCut variant over them) as canonical JSON."""
        return json.dumps({**self.method_kwargs.get(method, {}), **(variant or {})}, sort_keys=True)

    def configs(self, model: str | None = None) -> list[Config]:
        """Every configuration (of one model, or of all), in a stable order.

        ``image_size`` is 0 in a configuration when the grid leaves it to the backbone (its native size;
        result rows also record the size actually used, as ``input_size``).
        """
        size = self.image_size or 0
        settings = json.dumps(dict(self.settings), sort_keys=True)
        data = self.data_key()
        out: list[Config] = []
        for m in self.models if model is None else (model,):
            for layer in self.layers:
                for t in self.timesteps:
                    for method in self.methods:
                        if method == "diffcut":
                            sweep = [
                                (a, tau, mode, self.method_params(method, v))
                                for v in self.variants
                                for a in self.alphas
                                for mode in self.modes
                                for tau in self.taus
                            ]
                        else:
                            sweep = [(float("nan"), float("nan"), "", self.method_params(method))]
                        for alpha, tau, mode, params in sweep:
                            tau = (
                                float("nan") if tau == AUTO else tau
                            )  # the tau column is numeric: NaN = auto
                            for refine in self.refines:
                                out.append(Config(m, layer, int(t), method, alpha, tau, mode, refine, params,
                                                  self.seed, size, self.label_size, self.prompt, self.preset,
                                                  settings, self.match, data))  # fmt: skip
        return out

    def __len__(self) -> int:
        """Number of configurations per image (counted, not expanded)."""
        per_refine = len(self.refines) * len(self.layers) * len(self.timesteps)
        diffcut = (
            len(self.variants) * len(self.alphas) * len(self.taus) * len(self.modes)
            if "diffcut" in self.methods
            else 0
        )
        return per_refine * (diffcut + len(self.methods) - ("diffcut" in self.methods)) * len(self.models)

    def iter_units(self, names: Sequence[str]) -> Iterator[tuple[str, int, str]]:
        """The work units ``(model, image index, image name)``, model-major (one model loaded at a time)."""
        for m in self.models:
            for i, name in enumerate(names):
                yield m, i, name
