"""Prior recipes: every hyper-distribution of the synthetic prior, read from a TOML file.

A recipe is data, not code: each section of the TOML file maps to a frozen dataclass below, and each
sampled quantity is a :class:`Dist` (a constant, or a table such as
``{dist = "loguniform", low = 0.01, high = 0.5}``). Unknown sections or keys, missing fields and
ill-formed distributions raise a ``ValueError`` that names the field (``"mlp_scm.n_layers"``).

A recipe file may start with ``extends = "default"`` (a shipped recipe name or a path relative to
the file) and then give only the fields it changes; tables are merged key by key.
"""

from __future__ import annotations

import dataclasses
import math
import typing
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import tomllib

RECIPE_DIR = Path(__file__).parent / "recipes"

_DIST_PARAMS: dict[str, tuple[str, ...]] = {
    "constant": ("value",),
    "uniform": ("low", "high"),
    "loguniform": ("low", "high"),
    "int_uniform": ("low", "high"),
    "int_loguniform": ("low", "high"),
    "beta": ("a", "b", "low", "high"),
    "choice": ("values", "weights"),
}
_OPTIONAL_PARAMS = {"beta": {"low": 0.0, "high": 1.0}, "choice": {"weights": None}}


@dataclass(frozen=True)
class Dist:
    """A one-dimensional distribution of a hyper-parameter.

    Parameters
    ----------
    kind : str
        One of ``constant, uniform, loguniform, int_uniform, int_loguniform, beta, choice``.
        ``int_*`` bounds are inclusive; ``beta`` is rescaled to ``[low, high]``; ``choice`` picks
        one of ``values`` (numbers or strings) with optional ``weights``.
    params : tuple of (str, value) pairs
        The parameters of ``kind`` (a tuple so that the dataclass stays hashable and frozen).
    """

    kind: str
    params: tuple[tuple[str, Any], ...]

    def get(self, key: str) -> Any:
        return dict(self.params)[key]

    def sample(self, rng: np.random.Generator) -> Any:
        """Draw one value with ``rng``."""
        p = dict(self.params)
        k = self.kind
        if k == "constant":
            return p["value"]
        if k == "uniform":
            return float(rng.uniform(p["low"], p["high"]))
        if k == "loguniform":
            return float(math.exp(rng.uniform(math.log(p["low"]), math.log(p["high"]))))
        if k == "int_uniform":
            return int(rng.integers(p["low"], p["high"] + 1))
        if k == "int_loguniform":
            u = rng.uniform(math.log(p["low"]), math.log(p["high"] + 1))
            return int(min(p["high"], math.floor(math.exp(u))))
        if k == "beta":
            return float(p["low"] + (p["high"] - p["low"]) * rng.beta(p["a"], p["b"]))
        values, weights = p["values"], p["weights"]
        w = None if weights is None else np.asarray(weights, float) / np.sum(weights)
        return values[int(rng.choice(len(values), p=w))]

    def bounds(self) -> tuple[float, float]:
        """Smallest and largest value the distribution can take (numbers only)."""
        p = dict(self.params)
        if self.kind == "constant":
            return p["value"], p["value"]
        if self.kind == "choice":
            return min(p["values"]), max(p["values"])
        return p["low"], p["high"]


def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def parse_dist(field: str, raw: Any) -> Dist:
    """Build a :class:`Dist` from its TOML form; ``field`` names it in error messages."""
    if _is_number(raw) or isinstance(raw, str):
        return Dist("constant", (("value", raw),))
    if not isinstance(raw, dict):
        raise ValueError(f"recipe field {field!r}: expected a number or a table like "
                         f"{{dist = \"uniform\", low = 0, high = 1}}, got {raw!r}")
    kind = raw.get("dist")
    if kind not in _DIST_PARAMS:
        raise ValueError(f"recipe field {field!r}: 'dist' must be one of {sorted(_DIST_PARAMS)}, "
                         f"got {kind!r}")
    names = _DIST_PARAMS[kind]
    optional = _OPTIONAL_PARAMS.get(kind, {})
    unknown = set(raw) - set(names) - {"dist"}
    if unknown:
        raise ValueError(f"recipe field {field!r}: unknown key(s) {sorted(unknown)} for "
                         f"dist={kind!r} (expected {list(names)})")
    params = {}
    for name in names:
        if name not in raw and name not in optional:
            raise ValueError(f"recipe field {field!r}: dist={kind!r} needs key {name!r}")
        params[name] = raw.get(name, optional.get(name))
    if kind == "choice":
        values, weights = params["values"], params["weights"]
        if not isinstance(values, list) or not values:
            raise ValueError(f"recipe field {field!r}: 'values' must be a non-empty list, got {values!r}")
        if weights is not None and (
            not isinstance(weights, list) or len(weights) != len(values)
            or not all(_is_number(w) and w >= 0 for w in weights) or sum(weights) <= 0
        ):
            raise ValueError(f"recipe field {field!r}: 'weights' must be {len(values)} non-negative "
                             f"numbers with a positive sum, got {weights!r}")
        params["values"] = tuple(values)
        params["weights"] = None if weights is None else tuple(weights)
    else:
        for name, v in params.items():
            if not _is_number(v):
                raise ValueError(f"recipe field {field!r}: {name!r} must be a number, got {v!r}")
        if "low" in params and params["low"] > params["high"]:
            raise ValueError(f"recipe field {field!r}: low={params['low']} > high={params['high']}")
        if kind.endswith("loguniform") and params["low"] <= 0:
            raise ValueError(f"recipe field {field!r}: {kind} needs low > 0, got {params['low']}")
        if kind.startswith("int_") and not all(isinstance(params[n], int) for n in ("low", "high")):
            raise ValueError(f"recipe field {field!r}: {kind} needs integer bounds, got "
                             f"low={params['low']!r}, high={params['high']!r}")
        if kind == "beta" and (params["a"] <= 0 or params["b"] <= 0):
            raise ValueError(f"recipe field {field!r}: beta needs a > 0 and b > 0")
    return Dist(kind, tuple(params.items()))


@dataclass(frozen=True)
class ShapeSection:
    """Table shapes: rows and features per step of a stream, features and split per dataset."""

    n_rows: Dist
    max_features: Dist
    feature_fraction: Dist
    min_features: int
    split_fraction: Dist


@dataclass(frozen=True)
class ClassificationSection:
    """How a latent target becomes class labels."""

    max_classes: int
    n_classes: Dist
    threshold_mode: Dist
    imbalance: Dist
    label_noise: Dist
    min_class_count: int


@dataclass(frozen=True)
class RegressionSection:
    """How a latent target becomes a regression target."""

    noise_std: Dist
    warp_prob: float
    scale: Dist
    shift: Dist


@dataclass(frozen=True)
class MLPSCMSection:
    """Random-MLP structural causal models."""

    n_causes: Dist
    n_layers: Dist
    width: Dist
    activations: dict[str, float]
    n_activations: Dist
    sine_frequency: Dist
    weight_sparsity: Dist
    bias_std: Dist
    noise_std: Dist
    root: Dist
    target_last_layer_prob: float
    feature_relevance: Dist


@dataclass(frozen=True)
class TreeSCMSection:
    """Random-tree structural causal models."""

    n_causes: Dist
    n_layers: Dist
    width: Dist
    n_trees: Dist
    depth: Dist
    max_parents: Dist
    linear_weight: Dist
    noise_std: Dist
    root: Dist
    target_last_layer_prob: float
    feature_relevance: Dist


@dataclass(frozen=True)
class SmoothSection:
    """Smooth random functions (random Fourier features of a GP with an ARD kernel)."""

    n_components: Dist
    lengthscale: Dist
    relevant_fraction: Dist
    linear_weight: Dist
    noise_std: Dist
    root: Dist


@dataclass(frozen=True)
class PostprocessSection:
    """Shared post-processing of the features."""

    irrelevant_fraction: Dist
    duplicate_fraction: Dist
    warp_prob: Dist
    outlier_prob: float
    outlier_rate: Dist
    categorical_prob: float
    categorical_fraction: Dist
    categorical_levels: Dist
    categorical_ordered_prob: float
    missing_prob: float
    missing_rate: Dist
    missing_mnar_prob: float
    integer_prob: Dist
    positive_prob: float
    scale: Dist
    shift: Dist
    observed_target_prob: float


@dataclass(frozen=True)
class ObservedTargetSection:
    """Targets computed from the observed columns (see :mod:`priors.observed_target`)."""

    family: Dist
    n_trees: Dist
    depth: Dist
    n_layers: Dist
    width: Dist
    activation: Dist
    embedding_dim: Dist
    column_fraction: Dist
    all_categorical_prob: float


@dataclass(frozen=True)
class Recipe:
    """A complete prior: family weights and every hyper-distribution. Build with :func:`load_recipe`."""

    name: str
    mixture: dict[str, float]
    shape: ShapeSection
    classification: ClassificationSection
    regression: RegressionSection
    mlp_scm: MLPSCMSection
    tree_scm: TreeSCMSection
    smooth: SmoothSection
    postprocess: PostprocessSection
    observed_target: ObservedTargetSection

    def __hash__(self) -> int:  # dict fields are not hashable; the name and sections identify it
        return hash((self.name, tuple(sorted(self.mixture.items()))))

    def to_dict(self) -> dict[str, Any]:
        """A JSON-serialisable form (for shard indexes and dataset metadata)."""
        return _to_plain(dataclasses.asdict(self))


def _to_plain(obj: Any) -> Any:
    if isinstance(obj, dict):
        return {k: _to_plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        if obj and all(isinstance(x, tuple) and len(x) == 2 and isinstance(x[0], str) for x in obj):
            return {k: _to_plain(v) for k, v in obj}
        return [_to_plain(x) for x in obj]
    return obj


FAMILIES = ("mlp_scm", "tree_scm", "smooth")
ACTIVATIONS = ("tanh", "relu", "identity", "sine", "step", "rbf", "abs", "square", "sigmoid",
               "leaky_relu")
_ROOTS = ("normal", "uniform", "mixed")
_MODES = ("quantile", "value", "argmax")
_OBSERVED_FAMILIES = ("trees", "mlp")
_OBSERVED_ACTIVATIONS = ("tanh", "relu")


def _parse_weights(field: str, raw: Any, allowed: tuple[str, ...]) -> dict[str, float]:
    if not isinstance(raw, dict) or not raw:
        raise ValueError(f"recipe field {field!r}: expected a table of weights, got {raw!r}")
    for k, v in raw.items():
        if k not in allowed:
            raise ValueError(f"recipe field {field}.{k}: unknown name {k!r} (allowed: {list(allowed)})")
        if not _is_number(v) or v < 0:
            raise ValueError(f"recipe field {field}.{k}: weight must be a number >= 0, got {v!r}")
    if sum(raw.values()) <= 0:
        raise ValueError(f"recipe field {field!r}: weights must have a positive sum, got {raw!r}")
    return {k: float(v) for k, v in raw.items()}


def _parse_section(cls: type, name: str, raw: Any) -> Any:
    if not isinstance(raw, dict):
        raise ValueError(f"recipe section [{name}] must be a table, got {raw!r}")
    hints = typing.get_type_hints(cls)
    fields = [f.name for f in dataclasses.fields(cls)]
    unknown = set(raw) - set(fields)
    if unknown:
        raise ValueError(f"recipe section [{name}]: unknown field(s) "
                         f"{sorted(f'{name}.{u}' for u in unknown)}; known fields: {fields}")
    values = {}
    for f in fields:
        path = f"{name}.{f}"
        if f not in raw:
            raise ValueError(f"recipe field {path!r} is missing")
        v, hint = raw[f], hints[f]
        if hint is Dist:
            values[f] = parse_dist(path, v)
        elif hint is float:
            if not _is_number(v):
                raise ValueError(f"recipe field {path!r}: expected a number, got {v!r}")
            values[f] = float(v)
        elif hint is int:
            if not isinstance(v, int) or isinstance(v, bool):
                raise ValueError(f"recipe field {path!r}: expected an integer, got {v!r}")
            values[f] = v
        else:  # dict[str, float] of weights
            values[f] = _parse_weights(path, v, ACTIVATIONS)
    return cls(**values)


def _check_probability(path: str, v: float) -> None:
    if not 0.0 <= v <= 1.0:
        raise ValueError(f"recipe field {path!r}: expected a probability in [0, 1], got {v!r}")


def _check_range(path: str, d: Dist, lo: float, hi: float) -> None:
    if d.kind == "choice" and not all(_is_number(v) for v in d.get("values")):
        raise ValueError(f"recipe field {path!r}: expected numbers, got {d.get('values')!r}")
    if d.kind == "constant" and not _is_number(d.get("value")):
        raise ValueError(f"recipe field {path!r}: expected a number, got {d.get('value')!r}")
    a, b = d.bounds()
    if a < lo or b > hi:
        raise ValueError(f"recipe field {path!r}: values must lie in [{lo}, {hi}], got [{a}, {b}]")


def _check_names(path: str, d: Dist, allowed: tuple[str, ...]) -> None:
    values = d.get("values") if d.kind == "choice" else (d.get("value"),)
    bad = [v for v in values if v not in allowed]
    if bad:
        raise ValueError(f"recipe field {path!r}: unknown value(s) {bad} (allowed: {list(allowed)})")


def recipe_from_dict(raw: dict[str, Any], *, name: str = "custom") -> Recipe:
    """Validate a parsed TOML document and build a :class:`Recipe`.

    Raises
    ------
    ValueError
        If a section or field is unknown, missing, or out of range; the message names the field.
    """
    sections = {
        "shape": ShapeSection, "classification": ClassificationSection,
        "regression": RegressionSection, "mlp_scm": MLPSCMSection, "tree_scm": TreeSCMSection,
        "smooth": SmoothSection, "postprocess": PostprocessSection,
        "observed_target": ObservedTargetSection,
    }
    unknown = set(raw) - set(sections) - {"mixture", "extends"}
    if unknown:
        raise ValueError(f"recipe: unknown section(s) {sorted(unknown)}; known: "
                         f"{['mixture', *sections]}")
    for s in ["mixture", *sections]:
        if s not in raw:
            raise ValueError(f"recipe section [{s}] is missing")
    parsed = {s: _parse_section(cls, s, raw[s]) for s, cls in sections.items()}
    mixture = _parse_weights("mixture", raw["mixture"], FAMILIES)
    recipe = Recipe(name=name, mixture=mixture, **parsed)
    _validate(recipe)
    return recipe


def _validate(r: Recipe) -> None:
    s, c, p = r.shape, r.classification, r.postprocess
    _check_range("shape.n_rows", s.n_rows, 4, 1e7)
    _check_range("shape.max_features", s.max_features, 1, 1e5)
    _check_range("shape.feature_fraction", s.feature_fraction, 0, 1)
    _check_range("shape.split_fraction", s.split_fraction, 0.01, 0.99)
    if s.min_features < 1:
        raise ValueError(f"recipe field 'shape.min_features': expected >= 1, got {s.min_features}")
    if not 2 <= c.max_classes <= 10:
        raise ValueError(f"recipe field 'classification.max_classes': expected 2..10, got {c.max_classes}")
    _check_range("classification.n_classes", c.n_classes, 2, c.max_classes)
    _check_names("classification.threshold_mode", c.threshold_mode, _MODES)
    _check_range("classification.imbalance", c.imbalance, 1e-6, 1e6)
    _check_range("classification.label_noise", c.label_noise, 0, 0.5)
    if c.min_class_count < 1:
        raise ValueError(f"recipe field 'classification.min_class_count': expected >= 1, "
                         f"got {c.min_class_count}")
    _check_probability("regression.warp_prob", r.regression.warp_prob)
    for fam in ("mlp_scm", "tree_scm", "smooth"):
        sec = getattr(r, fam)
        _check_names(f"{fam}.root", sec.root, _ROOTS)
        _check_range(f"{fam}.noise_std", sec.noise_std, 0, 100)
        for f in ("n_causes", "n_layers", "width", "n_trees", "depth", "max_parents", "n_components"):
            if hasattr(sec, f):
                _check_range(f"{fam}.{f}", getattr(sec, f), 1, 4096)
        if hasattr(sec, "feature_relevance"):
            _check_range(f"{fam}.feature_relevance", sec.feature_relevance, 0, 20)
        if hasattr(sec, "target_last_layer_prob"):
            _check_probability(f"{fam}.target_last_layer_prob", sec.target_last_layer_prob)
    _check_range("mlp_scm.n_activations", r.mlp_scm.n_activations, 1, len(ACTIVATIONS))
    _check_range("mlp_scm.weight_sparsity", r.mlp_scm.weight_sparsity, 0, 0.99)
    _check_range("tree_scm.depth", r.tree_scm.depth, 1, 12)
    _check_range("smooth.relevant_fraction", r.smooth.relevant_fraction, 0, 1)
    for f in ("irrelevant_fraction", "duplicate_fraction", "warp_prob", "categorical_fraction",
              "integer_prob"):
        _check_range(f"postprocess.{f}", getattr(p, f), 0, 1)
    _check_range("postprocess.outlier_rate", p.outlier_rate, 0, 0.5)
    _check_range("postprocess.missing_rate", p.missing_rate, 0, 0.9)
    _check_range("postprocess.categorical_levels", p.categorical_levels, 2, 1000)
    _check_range("postprocess.scale", p.scale, 1e-12, 1e12)
    for f in ("outlier_prob", "categorical_prob", "categorical_ordered_prob", "missing_prob",
              "missing_mnar_prob", "positive_prob", "observed_target_prob"):
        _check_probability(f"postprocess.{f}", getattr(p, f))
    o = r.observed_target
    _check_names("observed_target.family", o.family, _OBSERVED_FAMILIES)
    _check_names("observed_target.activation", o.activation, _OBSERVED_ACTIVATIONS)
    _check_range("observed_target.n_trees", o.n_trees, 1, 256)
    _check_range("observed_target.depth", o.depth, 1, 12)
    _check_range("observed_target.n_layers", o.n_layers, 1, 16)
    _check_range("observed_target.width", o.width, 1, 4096)
    _check_range("observed_target.embedding_dim", o.embedding_dim, 1, 64)
    _check_range("observed_target.column_fraction", o.column_fraction, 0, 1)
    _check_probability("observed_target.all_categorical_prob", o.all_categorical_prob)


def _merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for k, v in over.items():
        # A distribution table replaces the base value whole; plain tables merge key by key.
        if isinstance(v, dict) and "dist" not in v and isinstance(out.get(k), dict):
            out[k] = _merge(out[k], v)
        else:
            out[k] = v
    return out


def _resolve(path_or_name: str | Path) -> Path:
    p = Path(path_or_name)
    if p.suffix == ".toml" or p.exists():
        if not p.is_file():
            raise ValueError(f"recipe file not found: {str(p)!r}")
        return p
    shipped = RECIPE_DIR / f"{path_or_name}.toml"
    if not shipped.is_file():
        names = sorted(f.stem for f in RECIPE_DIR.glob("*.toml"))
        raise ValueError(f"recipe {str(path_or_name)!r} is neither a TOML file nor a shipped recipe "
                         f"name (shipped: {names})")
    return shipped


def _read_raw(path: Path, depth: int = 0) -> dict[str, Any]:
    if depth > 8:
        raise ValueError(f"recipe {str(path)!r}: 'extends' chain is too deep (cycle?)")
    try:
        raw = tomllib.loads(path.read_text())
    except tomllib.TOMLDecodeError as exc:
        raise ValueError(f"recipe file {str(path)!r} is not valid TOML: {exc}") from exc
    base = raw.pop("extends", None)
    if base is None:
        return raw
    if not isinstance(base, str):
        raise ValueError(f"recipe field 'extends' must be a recipe name or path, got {base!r}")
    rel = path.parent / base
    base_path = rel if rel.suffix == ".toml" and rel.is_file() else _resolve(base)
    return _merge(_read_raw(base_path, depth + 1), raw)


def load_recipe(path_or_name: str | Path | Recipe, *, overrides: dict[str, Any] | None = None) -> Recipe:
    """Load a recipe from a TOML path or the name of a shipped recipe (``"default"``, ``"smoke"``).

    Parameters
    ----------
    path_or_name : str, Path or Recipe
        A ``.toml`` file, or a name of a file in ``priors/recipes``. A :class:`Recipe` is returned
        as is (when ``overrides`` is None).
    overrides : dict, optional
        Nested tables merged over the file before validation, e.g.
        ``{"postprocess": {"missing_rate": 0.1}}``.

    Returns
    -------
    Recipe

    Raises
    ------
    ValueError
        If the file is missing, is not valid TOML, or a field is unknown, missing or out of range.
    """
    if isinstance(path_or_name, Recipe):
        if overrides is None:
            return path_or_name
        raise ValueError("load_recipe: overrides need a recipe path or name, not a Recipe object")
    path = _resolve(path_or_name)
    raw = _read_raw(path)
    if overrides:
        raw = _merge(raw, overrides)
    return recipe_from_dict(raw, name=path.stem)
