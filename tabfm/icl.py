"""TabFMClassifier and TabFMRegressor: the pretrained in-context model as scikit-learn estimators.

``fit`` runs no training: it stores the encoded training table and computes, once per ensemble
member, the cached summary of the training rows (:meth:`ICLTransformer.encode_context`). ``predict``
then runs only the test rows against those summaries, in chunks that bound memory.

Ensemble members differ by a feature permutation (and a feature subset when there are more
features than ``max_features``), a shuffled order of each categorical column's codes, a class
permutation, and (``numeric_transform="mixed"``, the classifier's default) the numeric
preprocessing: raw values for even members, a quantile-normal map for odd ones; the encoding of
categorical columns (``categorical_transform``: their codes, or one 0/1 column per level); and, with
``context``, by the rows a test row reads: a local member runs each test row with its nearest
training rows as the whole context, instead of against the cached summary of all of them, and a
focused member reads the cached summary of all of them but, in its last in-context blocks, only
the rows of its neighbourhood (in the classifier, every second focused member a neighbourhood
sized at fit by a k-NN vote of the training labels). Their probabilities are averaged. With more classes than the network's outputs, each
member sees a random balanced grouping of the classes (an error-correcting output code) and
class scores are decoded from the sum of the members' log-probabilities.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np
import torch

from models.icl import ICLContext, ICLTransformer
from tabfm.base import TabularClassifier, TabularEstimator, TabularRegressor
from tabfm.checkpoint import network_from_state, read_card, resolve_checkpoint, shared_network
from tabfm.device import map_on_threads
from tabfm.errors import TabFMValidationError
from tabfm.neighbours import NeighbourIndex
from tabfm.preprocessing import FIRST_CATEGORY_CODE, NumericScaler, TargetQuantiles
from tabfm.ridge_feature import BASES as LINEAR_BASES
from tabfm.ridge_feature import RidgeFeature, class_targets

NUMERIC_TRANSFORMS = ("mixed", "none", "quantile")
TARGET_TRANSFORMS = ("mixed", "none", "quantile")
CATEGORICAL_TRANSFORMS = ("mixed", "native", "onehot")
CONTEXTS = ("global", "focused", "local", "mixed")
LOCAL_METRICS = ("relevance", "uniform")
LINEAR_FEATURES = ("none", "mixed", "all")
ONEHOT_MAX_LEVELS = 12  # categorical columns with more known levels stay on the native path
ONEHOT_MAX_WIDTH = 128  # a one-hot member expands columns (in its order) while its width stays within this


@dataclass
class Member:
    """How one ensemble member sees the table (all plain arrays: saved as JSON, exported later)."""

    features: np.ndarray  # (F_m,) column indices into the encoded table, in the member's order
    quantile: bool  # numeric columns through the quantile-normal map
    code_maps: list[np.ndarray | None]  # per used column: code -> member code (NaN for missing/unseen)
    class_map: np.ndarray | None  # (n_classes,) class -> network output index (a permutation or a grouping)
    local: bool = False  # each test row reads its nearest training rows instead of all of them
    onehot: np.ndarray | None = None  # (F_m,) bool: used categorical columns entered as one 0/1 column per level
    focused: bool = False  # global, but each test row's last in-context blocks read only its neighbours
    target_quantile: bool = False  # regression: the network sees the target's quantile-normal map
    linear: bool = False  # the ridge prediction(s) of the target enter as extra numeric columns
    neighbourhood: int | None = None  # rows a local or focused member reads (None: the estimator's local_rows)

    def column_widths(self) -> np.ndarray:
        """``(F_m,)`` columns each used column becomes in the member's view: its known levels when
        one-hot, else 1."""
        if self.onehot is None:
            return np.ones(len(self.features), dtype=np.int64)
        return np.array([_n_levels(m) if hot else 1 for m, hot in zip(self.code_maps, self.onehot, strict=True)], dtype=np.int64)

    def width(self) -> int:
        """Columns of the member's view of the table (one-hot columns expanded)."""
        return int(self.column_widths().sum())

    def to_dict(self) -> dict[str, Any]:
        return {
            "features": self.features.tolist(),
            "quantile": self.quantile,
            "code_maps": [None if m is None else np.nan_to_num(m, nan=-1).astype(int).tolist() for m in self.code_maps],
            "class_map": None if self.class_map is None else self.class_map.tolist(),
            "local": self.local,
            "focused": self.focused,
            "onehot": None if self.onehot is None else self.onehot.tolist(),
            "target_quantile": self.target_quantile,
            "linear": self.linear,
            "neighbourhood": self.neighbourhood,
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Member:
        maps = [None if m is None else np.where(np.asarray(m) < 0, np.nan, np.asarray(m, dtype=np.float64)) for m in d["code_maps"]]
        class_map = None if d["class_map"] is None else np.asarray(d["class_map"], dtype=np.int64)
        onehot = None if d.get("onehot") is None else np.asarray(d["onehot"], dtype=bool)
        return cls(
            np.asarray(d["features"], dtype=np.int64),
            bool(d["quantile"]),
            maps,
            class_map,
            bool(d.get("local", False)),
            onehot,
            bool(d.get("focused", False)),
            bool(d.get("target_quantile", False)),
            bool(d.get("linear", False)),
            None if d.get("neighbourhood") is None else int(d["neighbourhood"]),
        )


def _n_levels(code_map: np.ndarray | None) -> int:
    """Known levels of a categorical column from its member code map (0 for a numeric column)."""
    return 0 if code_map is None else len(code_map) - FIRST_CATEGORY_CODE


def _onehot_columns(code_maps: list[np.ndarray | None]) -> np.ndarray | None:
    """Which used columns a one-hot member expands: categorical ones of at most ``ONEHOT_MAX_LEVELS``
    known levels, in the member's order, while the member's width stays within ``ONEHOT_MAX_WIDTH``
    (None: none of them)."""
    width = len(code_maps)
    expand = np.zeros(width, dtype=bool)
    for k, mapping in enumerate(code_maps):
        levels = _n_levels(mapping)
        if 1 <= levels <= ONEHOT_MAX_LEVELS and width + levels - 1 <= ONEHOT_MAX_WIDTH:
            expand[k] = True
            width += levels - 1
    return expand if expand.any() else None


MAX_QUERIES = 64  # test rows in one local table beside its context
# In-context blocks (of the last ones) where a focused member's test rows read only their
# neighbourhood: the last 2 or 3 of 6 gave the same mean ROC-AUC on the 44 classification datasets.
FOCUS_BLOCKS = 2
# Levels at which a quantile member's distribution is read to take its mean on the target's scale.
MEAN_LEVELS = 128


class _Once:
    """``compute()``'s value, computed on the first call only; concurrent callers wait for it."""

    def __init__(self, compute: Callable[[], Any]) -> None:
        self._compute = compute
        self._lock = threading.Lock()
        self._done = False
        self._value: Any = None

    def __call__(self) -> Any:
        with self._lock:
            if not self._done:
                self._value = self._compute()
                self._done = True
        return self._value


def _check_positive_int(name: str, value: Any, *, allow_none: bool = False) -> None:
    if allow_none and value is None:
        return
    if not (isinstance(value, (int, np.integer)) and not isinstance(value, bool) and value >= 1):
        kind = "a positive integer or None" if allow_none else "a positive integer"
        raise TabFMValidationError(f"{name} must be {kind}, however: {name}={value!r}")


def _check_choice(name: str, value: Any, allowed: tuple[str, ...]) -> None:
    if value not in allowed:
        raise TabFMValidationError(
            f"{name} must be one of {', '.join(map(repr, allowed))}, however: {name}={value!r}"
        )


def _query_tables(owner: np.ndarray, max_queries: int) -> list[tuple[int, np.ndarray]]:
    """Group test rows by the context they read: ``(context index, row indices)`` pairs of at most
    ``max_queries`` rows, largest first, so that batching pads little."""
    order = np.argsort(owner, kind="stable")
    bounds = np.flatnonzero(np.diff(owner[order])) + 1
    tables = []
    for rows in np.split(order, bounds):
        for start in range(0, len(rows), max_queries):
            tables.append((int(owner[rows[0]]), rows[start : start + max_queries]))
    tables.sort(key=lambda t: -len(t[1]))
    return tables


class _TabFMBase(TabularEstimator):
    """Shared fit/predict machinery of the two TabFM estimators."""

    _task: ClassVar[str]
    # What a model saved before each option existed did (read by :func:`tabfm.serialization.load_estimator`).
    _options_before: ClassVar[dict[str, Any]] = {"linear_basis": "linear", "local_metric": "uniform"}

    # -- fit ------------------------------------------------------------------------------------

    def _load_network(self) -> ICLTransformer:
        source = self.checkpoint
        if isinstance(source, ICLTransformer):  # pretraining validation passes the network itself
            network = source
        else:
            path = resolve_checkpoint(self._task, source)
            network = shared_network(path, self.device_)
            self.checkpoint_card_ = read_card(path).get("model", path.name)
        if network.config.task != self._task:
            raise TabFMValidationError(
                f"checkpoint is a {network.config.task} network, but {type(self).__name__} needs {self._task}"
            )
        return network.to(self.device_).eval()

    def _fit_encoded(self, X_enc: np.ndarray, y_enc: np.ndarray, rng: np.random.Generator) -> None:
        if not (isinstance(self.n_estimators, (int, np.integer)) and self.n_estimators >= 1):
            raise TabFMValidationError(f"n_estimators must be a positive integer, however: n_estimators={self.n_estimators!r}")
        if not (isinstance(self.softmax_temperature, (int, float)) and self.softmax_temperature > 0):
            raise TabFMValidationError(
                f"softmax_temperature must be a positive number, however: softmax_temperature={self.softmax_temperature!r}"
            )
        for name, allowed in (
            ("numeric_transform", NUMERIC_TRANSFORMS),
            ("categorical_transform", CATEGORICAL_TRANSFORMS),
            ("context", CONTEXTS),
            ("linear_feature", LINEAR_FEATURES),
            ("linear_basis", LINEAR_BASES),
            ("local_metric", LOCAL_METRICS),
        ):
            _check_choice(name, getattr(self, name), allowed)
        _check_positive_int("local_rows", self.local_rows)
        _check_positive_int("local_anchor_rows", self.local_anchor_rows, allow_none=True)
        grid = self.cell_grid
        if grid is not None and not (isinstance(grid, (int, np.integer)) and not isinstance(grid, bool) and grid >= 2):
            raise TabFMValidationError(f"cell_grid must be an integer of at least 2 or None, however: cell_grid={grid!r}")
        self.network_ = self._load_network()
        if self.max_context_rows is not None and len(X_enc) > self.max_context_rows:
            keep = self._context_subsample(y_enc, rng)
            X_enc, y_enc = X_enc[keep], y_enc[keep]
        self.X_train_, self.y_train_ = X_enc, y_enc
        categorical = self.preprocessor_.categorical_mask_
        numeric = ~categorical
        self.members_ = [self._make_member(i, rng) for i in range(self._n_members())]
        quantile = numeric.any() and any(m.quantile for m in self.members_)
        self.scaler_ = NumericScaler("quantile").fit(X_enc[:, numeric]) if quantile else None
        self.local_anchors_ = self._choose_anchors(rng) if any(m.local for m in self.members_) else None
        self._prepare_contexts()

    def _choose_anchors(self, rng: np.random.Generator) -> np.ndarray | None:
        """Training rows whose neighbourhoods are the local contexts (a random subset, so that
        anchors are dense where the rows are); None: every test row gets its own."""
        if self.local_anchor_rows is None or self.local_anchor_rows <= 1:
            return None
        n = len(self.X_train_)
        return np.sort(rng.choice(n, size=-(-n // int(self.local_anchor_rows)), replace=False))

    def _context_subsample(self, y_enc: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        return np.sort(rng.choice(len(y_enc), size=self.max_context_rows, replace=False))

    def _n_members(self) -> int:
        return int(self.n_estimators)

    def _make_member(self, index: int, rng: np.random.Generator) -> Member:
        n_features = self.n_features_in_
        limit = self.max_features or n_features
        features = rng.permutation(n_features)[: min(limit, n_features)]
        code_maps = []
        for j in features:
            cardinality = int(self.preprocessor_.cardinalities_[j])
            if cardinality == 0:
                code_maps.append(None)
                continue
            n_known = cardinality - FIRST_CATEGORY_CODE
            mapping = np.full(cardinality, np.nan)
            mapping[FIRST_CATEGORY_CODE:] = rng.permutation(n_known) if index > 0 else np.arange(n_known)
            code_maps.append(mapping)
        quantile = self.numeric_transform == "quantile" or (self.numeric_transform == "mixed" and index % 2 == 1)
        # "mixed" ("focused"): members 1, 2, 5, 6, ... are local (focused), so that with the mixed
        # numeric transform every pairing of raw/quantile inputs with each kind of context occurs.
        paired = (index + 1) // 2 % 2 == 1
        narrower = int(self.local_rows) < len(self.X_train_)  # else the neighbourhood is every row anyway
        # A local table of more than half the training rows is a worse-standardised global one
        # (hitters_salary, 184 rows: R² 0.480 global, 0.456 with local members), while a focused
        # read of them still helped (alzheimer_ad, 233 rows: ROC-AUC +0.008).
        local = 2 * int(self.local_rows) <= len(self.X_train_) and (
            self.context == "local" or (self.context == "mixed" and paired)
        )
        # An inducing-point summary has no per-row keys to focus on: a network without an exact
        # last block to focus in stays global.
        can_focus = self.network_.config.focusable_blocks > 0
        focused = narrower and can_focus and self.context == "focused" and paired
        # "mixed": members 2, 3, 6, 7, ... are one-hot, so that with the mixed numeric transform
        # raw and quantile inputs each meet both categorical encodings.
        onehot = self.categorical_transform == "onehot" or (self.categorical_transform == "mixed" and index // 2 % 2 == 1)
        return Member(
            features.astype(np.int64),
            quantile=quantile,
            code_maps=code_maps,
            class_map=self._class_map(index, rng),
            local=local,
            onehot=_onehot_columns(code_maps) if onehot else None,
            focused=focused,
            target_quantile=self._target_quantile(index),
            linear=self._linear_member(index),
        )

    def _target_quantile(self, index: int) -> bool:
        return False

    def _linear_member(self, index: int) -> bool:
        # "mixed": even members, those with raw numeric inputs under the mixed numeric transform.
        return self.linear_feature == "all" or (self.linear_feature == "mixed" and index % 2 == 0)

    def _ridge_targets(self) -> np.ndarray | None:
        """``(n, t)`` targets of the ridge feature; None: no ridge feature for this task."""
        raise NotImplementedError

    def _relevance_targets(self) -> np.ndarray | None:
        """``(n, t)`` targets whose relevance weighs the columns of the neighbour search (by
        default the ridge's); None: all columns alike."""
        return self._ridge_targets()

    def _class_map(self, index: int, rng: np.random.Generator) -> np.ndarray | None:
        return None

    def _ridge_columns(self, X_enc: np.ndarray) -> np.ndarray | None:
        """``(n, t)`` ridge columns of new rows (the full fit); None without linear members."""
        return None if self.ridge_ is None else self.ridge_.predict(X_enc)

    def _train_ridge_columns(self) -> np.ndarray | None:
        """``(n_train, t)`` ridge columns of the training rows: leave-one-out, as reliable as on new rows."""
        return None if self.ridge_ is None else self.ridge_.train_predictions_

    def _member_table(
        self, member: Member, X_enc: np.ndarray, ridge: np.ndarray | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """The member's view of an encoded table: ``(x (1, R, F_m), categorical (1, F_m))``.
        ``ridge``: the rows' ridge columns ``(R, t)``, appended for linear members (training rows
        take :meth:`_train_ridge_columns`, new rows :meth:`_ridge_columns`)."""
        X = X_enc.astype(np.float64, copy=True)
        categorical = self.preprocessor_.categorical_mask_
        if member.quantile and self.scaler_ is not None:
            X[:, ~categorical] = self.scaler_.transform(X[:, ~categorical])
        X = X[:, member.features]
        for k, mapping in enumerate(member.code_maps):
            if mapping is not None:
                X[:, k] = mapping[X[:, k].astype(np.int64)]
        cat = categorical[member.features]
        if member.onehot is not None:
            # One 0/1 column per known level, in the member's level order; missing and unseen
            # codes (NaN after the map) are 0 in every column. The indicators are numeric inputs.
            blocks, kinds = [], []
            for k, (hot, levels) in enumerate(zip(member.onehot, member.column_widths(), strict=True)):
                if hot:
                    blocks.append((X[:, k : k + 1] == np.arange(levels)).astype(np.float64))
                    kinds.append(np.zeros(levels, dtype=bool))
                else:
                    blocks.append(X[:, k : k + 1])
                    kinds.append(cat[k : k + 1])
            X, cat = np.concatenate(blocks, axis=1), np.concatenate(kinds)
        if member.linear and self.ridge_ is not None:
            assert ridge is not None and len(ridge) == len(X), "a linear member's rows need their ridge columns"
            X = np.concatenate([X, ridge], axis=1)
            cat = np.concatenate([cat, np.zeros(ridge.shape[1], dtype=bool)])
        x = torch.as_tensor(X, dtype=torch.float32, device=self.device_)[None]
        return x, torch.as_tensor(cat, device=self.device_)[None]

    def _train_targets(self, member: Member) -> np.ndarray:
        raise NotImplementedError

    def _prepare_contexts(self) -> None:
        """Global members: a summary of all training rows each. Local and focused members: a
        neighbour index."""
        self.neighbour_index_ = None
        targets = self._ridge_targets() if any(m.linear for m in self.members_) else None
        self.ridge_ = None
        if targets is not None:
            self.ridge_ = RidgeFeature(
                self.preprocessor_.categorical_mask_, self.preprocessor_.cardinalities_, self.linear_basis
            )
            self.ridge_.fit(self.X_train_, targets)
        if any(m.local or m.focused for m in self.members_):
            relevance = self._relevance_targets() if self.local_metric == "relevance" else None
            self.neighbour_index_ = NeighbourIndex(
                self.preprocessor_.categorical_mask_, self.preprocessor_.cardinalities_
            ).fit(self.X_train_, int(self.local_rows), anchors=self.local_anchors_, targets=relevance)
            self._choose_neighbourhoods()
        self._encode_contexts()

    def _choose_neighbourhoods(self) -> None:
        """Set :attr:`Member.neighbourhood` where members read fewer than ``local_rows`` rows."""

    def _encode_contexts(self) -> None:
        self.contexts_ = map_on_threads(self._encode_context, len(self.members_), self.device_)

    def _encode_context(self, member_index: int) -> ICLContext | None:
        member = self.members_[member_index]
        if member.local:
            return None
        x, cat = self._member_table(member, self.X_train_, self._train_ridge_columns())
        y = torch.as_tensor(self._train_targets(member), dtype=torch.float32, device=self.device_)[None]
        return self.network_.encode_context(x, y, categorical=cat, cell_grid=self.cell_grid)

    # -- predict --------------------------------------------------------------------------------

    def _neighbours(self, X_enc: np.ndarray) -> np.ndarray | None:
        """``(n, local_rows)`` training-row indices of each row's neighbourhood; None without local
        or focused members."""
        if self.neighbour_index_ is None:
            return None
        return self.neighbour_index_.query(X_enc)

    def _context_targets(self, member: Member, neighbours: np.ndarray) -> np.ndarray:
        """The member's training targets of each row's local context, ``(n, k)``."""
        return self._train_targets(member)[neighbours]

    def _all_member_logits(self, X_enc: np.ndarray, neighbours: np.ndarray | None = None) -> list[np.ndarray]:
        """Every member's :meth:`_member_logits` of the rows, their :meth:`_neighbours` (unless
        given) and ridge columns computed once for all.

        Both are computed by the first member that needs them, on its thread: meanwhile the
        members that do not (global ones for the neighbours) already run on the other threads,
        where computing them first left all but one core idle (the neighbour search of 1,000 rows
        took ~6% of a default fit + predict of 1,000 x 1,000 rows).
        """
        shared_neighbours = _Once(lambda: self._neighbours(X_enc) if neighbours is None else neighbours)
        shared_ridge = _Once(lambda: self._ridge_columns(X_enc))

        def logits(i: int) -> np.ndarray:
            member = self.members_[i]
            rows = None
            if member.local or member.focused:
                rows = shared_neighbours()  # nearest first: a smaller neighbourhood is a prefix
                if member.neighbourhood is not None:
                    rows = np.ascontiguousarray(rows[:, : member.neighbourhood])
            return self._member_logits(i, X_enc, rows, shared_ridge() if member.linear else None)

        return map_on_threads(logits, len(self.members_), self.device_)

    @torch.inference_mode()
    def _member_logits(
        self,
        member_index: int,
        X_enc: np.ndarray,
        neighbours: np.ndarray | None = None,
        ridge: np.ndarray | None = None,
    ) -> np.ndarray:
        """Logits ``(n, n_outputs)`` of one member, test rows in chunks of ``batch_size``.

        ``ridge``: the rows' :meth:`_ridge_columns`, computed once for all members (else here).

        With ``neighbours`` the test rows that share a context (an anchor's neighbourhood) form one
        table: the context followed by up to ``MAX_QUERIES`` of them, which never read one
        another; tables are batched up to about ``batch_size`` rows per forward pass.
        """
        member = self.members_[member_index]
        if ridge is None and member.linear:
            ridge = self._ridge_columns(X_enc)
        if not member.local:
            context = self.contexts_[member_index]
            chunks = []
            for start in range(0, len(X_enc), self.batch_size):
                part = slice(start, start + self.batch_size)
                x, _ = self._member_table(member, X_enc[part], None if ridge is None else ridge[part])
                focus = {}
                if member.focused:  # networks with fewer (exact) blocks focus in all of those
                    rows = torch.as_tensor(neighbours[start : start + self.batch_size], device=self.device_)[None]
                    focus = {"focus_rows": rows, "focus_blocks": min(FOCUS_BLOCKS, self.network_.config.focusable_blocks)}
                logits = self.network_.predict_from_context(context, x, **focus)
                chunks.append(logits[0].float().cpu().numpy())
            return np.concatenate(chunks, axis=0)
        x_train, cat = self._member_table(member, self.X_train_, self._train_ridge_columns())
        sets, owner = np.unique(neighbours, axis=0, return_inverse=True)
        y_sets = torch.as_tensor(self._context_targets(member, sets), dtype=torch.float32, device=self.device_)
        tables = _query_tables(owner.reshape(-1), MAX_QUERIES)  # (set, test rows), largest first
        k = sets.shape[1]
        out = np.empty((len(X_enc), self.network_.config.n_outputs), dtype=np.float32)
        start = 0
        while start < len(tables):
            width = len(tables[start][1])  # the batch's widest table; narrower ones repeat a row
            stop = start + max(1, self.batch_size // (k + width))
            batch = tables[start:stop]
            set_ids = np.array([t[0] for t in batch])
            rows = np.stack([np.pad(t[1], (0, width - len(t[1])), mode="edge") for t in batch])  # (b, width)
            context = torch.as_tensor(sets[set_ids], device=self.device_)  # (b, k)
            flat = rows.reshape(-1)  # only this pass's rows: bounded memory
            x_test, _ = self._member_table(member, X_enc[flat], None if ridge is None else ridge[flat])
            x = torch.cat([x_train[0][context], x_test[0].unflatten(0, rows.shape)], dim=1)
            y = y_sets[torch.as_tensor(set_ids, device=self.device_)]
            logits = self.network_(x, y, categorical=cat.expand(len(batch), -1)).float().cpu().numpy()
            out[rows.reshape(-1)] = logits.reshape(-1, out.shape[1])
            start = stop
        return out

    # -- save / load ----------------------------------------------------------------------------

    def _get_state(self) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
        meta = {
            "network": self.network_.config.to_dict(),
            "members": [m.to_dict() for m in self.members_],
            "scaler": None if self.scaler_ is None else {"references": self.scaler_.references_.tolist()},
            "target": self._target_state(),
        }
        tensors = {f"network.{k}": v for k, v in self.network_.state_dict().items()}
        tensors["X_train"] = torch.as_tensor(self.X_train_)
        tensors["y_train"] = torch.as_tensor(self.y_train_)
        if self.scaler_ is not None:
            tensors["scaler.quantiles"] = torch.as_tensor(self.scaler_.quantiles_)
        if self.local_anchors_ is not None:
            tensors["local_anchors"] = torch.as_tensor(self.local_anchors_)
        return meta, tensors

    def _set_state(self, meta: dict[str, Any], tensors: dict[str, torch.Tensor]) -> None:
        from models.icl import ICLConfig

        state = {k.removeprefix("network."): v for k, v in tensors.items() if k.startswith("network.")}
        network = network_from_state(ICLConfig(**meta["network"]), state)
        self.network_ = network.to(self.device_).eval()
        self.members_ = [Member.from_dict(m) for m in meta["members"]]
        self.X_train_ = tensors["X_train"].cpu().numpy()
        self.y_train_ = tensors["y_train"].cpu().numpy()
        self.scaler_ = None
        if meta["scaler"] is not None:
            self.scaler_ = NumericScaler("quantile")
            self.scaler_.references_ = np.asarray(meta["scaler"]["references"])
            self.scaler_.quantiles_ = tensors["scaler.quantiles"].cpu().numpy()
        self._restore_target(meta["target"])
        anchors = tensors.get("local_anchors")
        self.local_anchors_ = None if anchors is None else anchors.cpu().numpy()
        self._prepare_contexts()

    def _target_state(self) -> dict[str, Any]:
        return {}

    def _restore_target(self, state: dict[str, Any]) -> None:
        return None

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.non_deterministic = False
        return tags


class TabFMClassifier(TabularClassifier, _TabFMBase):
    """The pretrained in-context classifier: no training, one forward pass per ensemble member.

    Parameters
    ----------
    n_estimators : int, default 4
        Ensemble members (feature, category and class permutations; raw and quantile inputs).
        Time grows linearly with it; accuracy with diminishing returns: on the 44 classification
        datasets of ``benchmarks/results/tabfm_ensemble_size.md`` 1, 2, 4 and 8 members gave mean
        ROC-AUC 0.888, 0.897, 0.903 and 0.906.
    softmax_temperature : float, default 0.9
        Logits are divided by it before the softmax; below 1 sharpens the probabilities.
    numeric_transform : {"mixed", "none", "quantile"}, default "mixed"
        What numeric columns go through before the network (which standardises every column
        itself): ``"mixed"`` gives even members raw values and odd members a quantile-normal map;
        ``"none"`` and ``"quantile"`` give every member one of them.
    categorical_transform : {"mixed", "native", "onehot"}, default "mixed"
        How categorical columns of at most 12 known levels enter the network: ``"native"``, as
        codes on its categorical path; ``"onehot"``, as one 0/1 column per level (missing and unseen
        levels are 0 in all of them; a member expands columns while its width stays within 128);
        ``"mixed"``, one-hot in members 2, 3, 6, 7, ... and native in the others. On the 39
        benchmark datasets with such columns (3 seeds), ``"mixed"`` raised mean ROC-AUC from 0.875 to
        0.880 (connect_4 0.654 to 0.734, tic_tac_toe 0.878 to 0.898) and mean R² from 0.6155 to
        0.6167, where all one-hot members gave 0.879 and 0.612
        (``benchmarks/results/tabfm_categorical_transform.md``).
    checkpoint : str or Path, optional
        A checkpoint written by ``tabfm pretrain``; default: the one shipped with tabfm, whose
        in-context blocks read the training rows through 32 inducing points per head except the
        last, which attends exactly. ``"exact"``: the shipped network whose six in-context blocks
        all attend exactly, about twice the time for a slightly higher mean ROC-AUC
        (``tabfm/checkpoints/MODEL_CARD.md``).
    max_context_rows : int or None, default 10000
        Training rows beyond this are subsampled (seeded): the cost is linear in it.
    max_features : int or None, default 200
        Each member sees at most this many features (a random subset when there are more);
        ``None``: all of them. Pretraining tables had at most 50, yet wider members read more:
        on the 11 benchmark datasets with more than 50 features (3 seeds), 50, 100 and 200 gave
        mean ROC-AUC 0.9589, 0.9626 and 0.9650 (alzheimer_ad 0.845 to 0.889, 130 features) and
        mean R² 0.7337, 0.7420 and 0.7417, for 62% more fit time in all
        (``benchmarks/results/tabfm_max_features.md``). Time and memory grow with it; the
        row-wise stages run on chunks of 8,192 training rows, which bounds their memory.
    batch_size : int, default 1024
        Test rows per forward pass (bounds memory at predict); a local member runs tables of a
        context and the test rows that read it, about ``batch_size`` rows in all per pass.
    cell_grid : int or None, default 256
        A cell's embedding depends only on its value and its column's training cells, so at fit
        each member tabulates it at this many values over each column's training range and
        embeds every cell, training or test, by linear interpolation in that table
        (:meth:`models.column_embedding.ColumnEmbedding.tabulate`): the column-embedding stage
        then costs the same for 100 or 100,000 rows. With the shipped checkpoints on the 64
        benchmark datasets (3 seeds) every dataset's mean score stayed within 0.0001 of exact
        cells (mean ROC-AUC 0.9181 and R² 0.6911 either way;
        ``benchmarks/results/tabfm_cell_grid.md``), and the default fit + predict of 1,000 ×
        1,000 rows took 0.246 s against 0.277 s (``benchmarks/results/tabfm_speed_cell_grid.md``).
        ``None``: every cell is embedded exactly. Local members (``context="local"`` or
        ``"mixed"``) always embed exactly.
    context : {"focused", "global", "local", "mixed"}, default "focused"
        Which training rows a test row reads. ``"global"``: all of them, through one summary per
        member computed at fit. ``"focused"``: members 1, 2, 5, 6, ... keep that summary, but in
        their last two in-context blocks each test row reads only its ``local_rows`` nearest
        training rows (:mod:`tabfm.neighbours`), whose representations were still built against
        all of them; the other members are global. It costs one nearest-neighbour search per
        ``predict`` and masked attention, in the network's exact blocks only (with inducing-point
        attention and no ``n_exact_blocks``, every member is global). With step 17,621 on the 44 classification datasets (3
        seeds, ≤3,000 rows) it raised mean ROC-AUC from 0.9087 (``"global"``) to 0.9131, better
        on 29 and worse on 8 (connect_4 +0.039, wine_quality_white +0.021, tic_tac_toe +0.015;
        health_insurance −0.007, wine_quality_red −0.006)
        (``benchmarks/results/tabfm_focused_context.md``); fit + predict on 1,000 × 1,000 rows
        took 0.82 s against 0.79 s all-global in one run (``benchmarks/results/tabfm_speed.md``).
        ``"local"``: its ``local_rows`` nearest training rows
        (:mod:`tabfm.neighbours`), read as a table of their own, so the network resolves the
        local structure (and, in regression, the local spread of the target) instead of the
        whole table's; this costs a forward pass of ``local_rows + 1`` rows per test row and
        member (on magic's 3,000 test rows, ~27 s per local member against ~0.4 s per global
        one, one core). ``"mixed"``: members 1, 2, 5, 6, ... are local and the others global. On
        the 64 benchmark datasets, ``"mixed"`` raised mean ROC-AUC from 0.903 to 0.914 and mean R²
        from 0.635 to 0.655 (``benchmarks/results/tabfm_local_context.md``).
    local_rows : int, default 128
        Rows in a local context or a focused read. With at most this many training rows every
        member is global, and with fewer than twice as many local members are global too (a
        context of most of the table resolves nothing local).
    local_rows_min : int or None, default 32
        The tightest neighbourhood a focused member may read. Every second focused member
        (members 2, 6, ...) reads, instead of ``local_rows`` rows, the size among
        ``local_rows_min``, twice that, ... up to ``local_rows`` (each at most half the training
        rows) whose leave-one-out k-nearest-neighbour vote of the training labels has the lowest
        log-loss (:meth:`tabfm.neighbours.NeighbourIndex.vote_log_loss`, at fit): a tight one
        where classes are locally sharp (rule-like tables such as krkopt), the wide one where
        labels are noisy (lending_club). The other focused members keep ``local_rows``, so the
        ensemble hedges. ``None``: all read ``local_rows``. A fixed 32 for both focused members
        gained on krkopt (+0.019) and lost as much on lending_club (−0.019), no better on average.
    local_anchor_rows : int or None, default None
        ``None``: each test row's local context is its own nearest rows. ``n``: one training row
        in ``n`` (drawn at fit) is an anchor, and a test row reads the neighbourhood of its
        nearest anchor, so that test rows near one another share one forward pass (each row's
        prediction still depends on that row alone). Faster, and less accurate, as a context is
        no longer centred on its test row: on 14 datasets where local contexts mattered most,
        ``"mixed"``'s median predict time fell from 30.4 s to 12.7 s with ``4`` and 4.7 s with
        ``16`` (0.9 s global), and mean ROC-AUC from 0.858 to 0.852 and 0.843 (0.831 global);
        on all 64 datasets ``16`` kept about half of the gain (ROC-AUC 0.908 against 0.914 and
        0.903; R² 0.645 against 0.655 and 0.635) (``benchmarks/results/tabfm_local_anchors.md``,
        ``tabfm_local_context.md``).
    local_metric : {"uniform", "relevance"}, default "uniform"
        How the neighbour search of local and focused members weighs the columns (distances are
        taken where TabR retrieves: quantile-normal numeric values, one-hot categories).
        ``"uniform"``: all alike. ``"relevance"``: each column by the square root of the share of
        the target's variance (here: of each class indicator's) that its own bins explain, less
        what noise would (:func:`tabfm.neighbours.relevance_weights`), so that columns the target
        ignores no longer pick the neighbours. For the classifier's focused members it did not
        pay: on the headline's splits (3 seeds, step 17,168) mean ROC-AUC went from 0.9192 to
        0.9186, better on 15 of 44 datasets and worse on 25 (hmda +0.004; yeast −0.007,
        attrition −0.006) (``benchmarks/results/tabfm_local_metric_classification.md``): a class
        often hangs on interactions that no single column's bins show (krkopt, yeast).
    linear_feature : {"all", "mixed", "none"}, default "all"
        A ridge regression of the target on all columns (:mod:`tabfm.ridge_feature`: clipped and
        quantile-normal numeric values, missing indicators, one-hot levels; closed form, penalty
        chosen by leave-one-out error) enters the members as extra numeric columns, one per
        class (one for binary targets; none beyond the network's 10 outputs). Training rows get
        its leave-one-out predictions, test rows the full fit, so the network sees the column
        as unreliable as it is. The network sums many weak linear effects poorly; the ridge
        does it exactly, and the network learns from the training rows how far to trust it.
        ``"mixed"``: members 0, 2, 4, ... only. Measured with step 17,168 on the 44
        classification datasets (3 seeds, ≤3,000 rows): mean ROC-AUC 0.9134 (``"none"``),
        0.9186 (``"mixed"``), 0.9192 (``"all"``, better on 25 and worse on 6: tic_tac_toe
        +0.066, connect_4 +0.054, attrition +0.034; hepatitis −0.011)
        (``benchmarks/results/tabfm_linear_feature.md``). It exports to ONNX.
    linear_basis : {"linear", "auto", "hinge"}, default "linear"
        What the ridge fits per numeric column (:class:`TabFMRegressor` explains the choices).
        For classification the curves did not pay: with step 17,168 on the 44 classification
        datasets (3 seeds) mean ROC-AUC was 0.9192 with either (``"auto"`` better on 6 datasets,
        worse on 9, each within ±0.005), so the classifier keeps the cheaper linear fit
        (``benchmarks/results/tabfm_linear_basis_classification.md``).
    categorical_features : list of str or int, optional
        Columns to treat as categorical besides those with a categorical dtype.
    device : str, default "auto"
        "auto" uses CUDA when a GPU is visible, else the CPU.
    random_state : int, RandomState or None, default 0
        Seeds the members' permutations and subsamples.

    Attributes
    ----------
    classes_ : ndarray of shape (n_classes,)
    n_features_in_ : int
    feature_names_in_ : ndarray of str (when X had string column names)

    Examples
    --------
    >>> from sklearn.datasets import load_breast_cancer
    >>> from tabfm import TabFMClassifier
    >>> X, y = load_breast_cancer(return_X_y=True)
    >>> clf = TabFMClassifier(n_estimators=1).fit(X[:400], y[:400])
    >>> bool(clf.score(X[400:], y[400:]) > 0.8)
    True
    """

    def __init__(
        self,
        *,
        n_estimators: int = 4,
        softmax_temperature: float = 0.9,
        numeric_transform: str = "mixed",
        categorical_transform: str = "mixed",
        checkpoint: Any = None,
        max_context_rows: int | None = 10_000,
        max_features: int | None = 200,
        batch_size: int = 1024,
        cell_grid: int | None = 256,
        context: str = "focused",
        local_rows: int = 128,
        local_rows_min: int | None = 32,
        local_anchor_rows: int | None = None,
        local_metric: str = "uniform",
        linear_feature: str = "all",
        linear_basis: str = "linear",
        categorical_features: Any = None,
        device: str = "auto",
        random_state: Any = 0,
    ) -> None:
        self.n_estimators = n_estimators
        self.softmax_temperature = softmax_temperature
        self.numeric_transform = numeric_transform
        self.categorical_transform = categorical_transform
        self.checkpoint = checkpoint
        self.max_context_rows = max_context_rows
        self.max_features = max_features
        self.batch_size = batch_size
        self.cell_grid = cell_grid
        self.context = context
        self.local_rows = local_rows
        self.local_rows_min = local_rows_min
        self.local_anchor_rows = local_anchor_rows
        self.local_metric = local_metric
        self.linear_feature = linear_feature
        self.linear_basis = linear_basis
        self.categorical_features = categorical_features
        self.device = device
        self.random_state = random_state

    def _fit_encoded(self, X_enc: np.ndarray, y_enc: np.ndarray, rng: np.random.Generator) -> None:
        _check_positive_int("local_rows_min", self.local_rows_min, allow_none=True)
        super()._fit_encoded(X_enc, y_enc, rng)

    def _neighbourhood_sizes(self) -> list[int]:
        """Sizes a tight neighbourhood may take: ``local_rows_min`` doubled up to ``local_rows``,
        each at most half the training rows (as for a local context)."""
        sizes, k = [], int(self.local_rows_min)
        while k < self.local_rows:
            sizes.append(k)
            k *= 2
        sizes.append(int(self.local_rows))
        return [k for k in sizes if 2 * k <= len(self.y_train_)]

    def _choose_neighbourhoods(self) -> None:
        # Every second focused member reads the neighbourhood size whose k-NN vote predicts the
        # training labels best: tight where classes are locally sharp, wide where labels are noisy.
        focused = [m for m in self.members_ if m.focused]
        sizes = self._neighbourhood_sizes() if self.local_rows_min is not None else []
        if len(focused) < 2 or len(sizes) < 2:
            return
        loss = self.neighbour_index_.vote_log_loss(self.y_train_, self.n_classes_, sizes)
        for member in focused[1::2]:
            member.neighbourhood = sizes[int(np.argmin(loss))]

    def _n_members(self) -> int:
        n = int(self.n_estimators)
        if self.n_classes_ > self.network_.config.n_outputs:
            # Enough random groupings that every pair of classes is told apart by several members.
            n = max(n, 2 * int(np.ceil(np.log(self.n_classes_) / np.log(self.network_.config.n_outputs))) + 4)
        return n

    def _context_subsample(self, y_enc: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        # Keep every class: take at least one row of each before filling the rest at random.
        first = np.array([rng.choice(np.flatnonzero(y_enc == c)) for c in range(self.n_classes_)])
        rest = np.setdiff1d(np.arange(len(y_enc)), first)
        extra = rng.choice(rest, size=self.max_context_rows - len(first), replace=False)
        return np.sort(np.concatenate([first, extra]))

    def _class_map(self, index: int, rng: np.random.Generator) -> np.ndarray:
        n_out = self.network_.config.n_outputs
        if self.n_classes_ <= n_out:
            return rng.permutation(self.n_classes_) if index > 0 else np.arange(self.n_classes_)
        # Balanced random grouping of classes into n_out groups (one column of an output code).
        groups = np.arange(self.n_classes_) % n_out
        return groups[rng.permutation(self.n_classes_)]

    def _train_targets(self, member: Member) -> np.ndarray:
        return member.class_map[self.y_train_].astype(np.float32)

    def _ridge_targets(self) -> np.ndarray | None:
        if self.n_classes_ > self.network_.config.n_outputs:
            return None  # grouped members: per-class columns would outnumber what they tell apart
        return class_targets(self.y_train_, self.n_classes_)

    def _relevance_targets(self) -> np.ndarray:
        return class_targets(self.y_train_, self.n_classes_)

    def _predict_proba_encoded(self, X_enc: np.ndarray) -> np.ndarray:
        n_out = self.network_.config.n_outputs
        grouped = self.n_classes_ > n_out
        total = np.zeros((len(X_enc), self.n_classes_))
        for member, logits in zip(self.members_, self._all_member_logits(X_enc), strict=True):
            used = int(member.class_map.max()) + 1  # outputs this member's context can produce
            logits = logits[:, :used] / self.softmax_temperature
            log_p = logits - np.logaddexp.reduce(logits, axis=1, keepdims=True)
            member_log_p = log_p[:, member.class_map]  # (n, n_classes): each class's output
            total += member_log_p if grouped else np.exp(member_log_p)
        if grouped:
            total -= total.max(axis=1, keepdims=True)
            proba = np.exp(total)
        else:
            proba = total / len(self.members_)
        return proba / proba.sum(axis=1, keepdims=True)


@dataclass
class _QuantileWarp:
    """Between a quantile member's target scale (the target's quantile-normal map) and the
    standardised target. The inverse map is constant beyond the training range, so the member's
    mass beyond its extreme knots sits on the smallest and largest training targets."""

    quantiles: TargetQuantiles
    mean: float
    std: float

    def to_standardised(self, t: torch.Tensor) -> torch.Tensor:
        return torch.as_tensor((self.quantiles.inverse(t.numpy()) - self.mean) / self.std)

    def from_standardised(self, z: torch.Tensor) -> torch.Tensor:
        return torch.as_tensor(self.quantiles.transform(z.numpy() * self.std + self.mean))

    def bounds(self) -> tuple[float, float]:
        """The smallest and largest training targets, standardised."""
        q = self.quantiles.quantiles_
        return (q[0] - self.mean) / self.std, (q[-1] - self.mean) / self.std


@dataclass
class _MemberDistribution:
    """One regression member's prediction: a bar distribution over ``shift + scale * v`` on the
    member's target scale, and ``warp`` from that scale to the standardised target (None: the
    member's scale is the standardised target)."""

    logits: torch.Tensor  # (n, n_bins), temperature applied
    shift: Any  # float or (n, 1)
    scale: Any
    warp: _QuantileWarp | None

    def to_standardised(self, t: torch.Tensor) -> torch.Tensor:
        return t if self.warp is None else self.warp.to_standardised(t)

    def mean(self, bar: Any) -> torch.Tensor:
        """``(n, 1)`` mean on the standardised target's scale."""
        if self.warp is None:
            return bar.mean(self.logits)[:, None] * self.scale + self.shift
        # The mean of a warped distribution: the average of its quantiles at evenly spread levels.
        levels = ((np.arange(MEAN_LEVELS) + 0.5) / MEAN_LEVELS).tolist()
        return self.quantile(bar, levels).mean(1, keepdim=True)

    def quantile(self, bar: Any, levels: list[float]) -> torch.Tensor:
        return self.to_standardised(bar.quantile(self.logits, levels) * self.scale + self.shift)

    def cdf(self, bar: Any, z: torch.Tensor) -> torch.Tensor:
        if self.warp is None:
            return bar.cdf(self.logits, (z - self.shift) / self.scale)
        cdf = bar.cdf(self.logits, (self.warp.from_standardised(z) - self.shift) / self.scale)
        low, high = self.warp.bounds()
        return torch.where(z >= high, 1.0, torch.where(z < low, 0.0, cdf))


class TabFMRegressor(TabularRegressor, _TabFMBase):
    """The pretrained in-context regressor: a distribution over the target for every row.

    The network predicts a bar (Riemann) distribution over the standardised target; members'
    distributions are averaged, and ``predict`` returns its mean (default), median or quantiles.

    Parameters
    ----------
    n_estimators : int, default 4
        As for :class:`TabFMClassifier`: mean R² 0.623, 0.630, 0.635 and 0.636 with 1, 2, 4 and 8
        members on the 20 regression datasets.
    softmax_temperature : float, default 1.0
    numeric_transform : {"none", "mixed", "quantile"}, default "none"
        As for :class:`TabFMClassifier`, but raw values by default. With the step-8,033
        checkpoint quantile-normal members lowered mean R² on the checkpoint-selection splits
        (raw 0.621, mixed 0.612, quantile 0.585); with step 17,800 raw and mixed tie on the 20
        benchmark datasets (0.6432 and 0.6431, 3 seeds): mixed gains on skewed features
        (574_house_16H +0.041) and loses where raw values carry the relation (201_pol −0.028)
        (``benchmarks/results/tabfm_numeric_transform_regression.md``).
    categorical_transform : {"mixed", "native", "onehot"}, default "mixed"
        As for :class:`TabFMClassifier` (on the 13 regression datasets with such columns, mean R²
        0.6155 native, 0.6167 mixed, 0.6119 one-hot).
    target_transform : {"none", "mixed", "quantile"}, default "none"
        ``"quantile"``: the members see the target through its training quantiles mapped to a
        standard normal (:class:`tabfm.preprocessing.TargetQuantiles`), and their distributions
        are mapped back (means and quantiles on the target's own scale; never outside the
        training range). ``"mixed"``: odd members only. On the 20 benchmark datasets (one seed,
        step 17,967, default contexts) mean R² was 0.6753 with ``"none"``, 0.6761 with
        ``"mixed"`` and 0.6753 with ``"quantile"``, which gained on some tables (537_houses
        +0.012, 4544_GeographicalOriginalofMusic +0.008) and lost on others (574_house_16H
        −0.021, 207_autoPrice −0.015) (``benchmarks/results/tabfm_target_transform.md``).
    context : {"focused", "global", "local", "mixed"}, default "mixed"
    local_anchor_rows : int or None, default 4
        As for :class:`TabFMClassifier`, but by default members 1 and 2 of 4 read local contexts
        (shared by the test rows near one of every 4th training row). A local member's bins cover
        the standardised targets of its context; the members' mixture is taken on the target's
        own scale. On the 20 benchmark datasets (3 seeds, step 17,800) this raised mean R² from
        0.6432 (``context="global"``) to 0.6599, better on 12 and worse on 7 (574_house_16H
        +0.130, 201_pol +0.065, 537_houses +0.055; hitters_salary −0.024, food_deliveries −0.023),
        and multiplied the summed predict time by 11 (``benchmarks/results/tabfm_regression_context.md``).
        Tables of fewer than ``2 * local_rows`` training rows now keep every member global (with
        step 17,967, 3 seeds: hitters_salary 0.456 → 0.481, 560_bodyfat 0.985 → 0.987;
        ``benchmarks/results/tabfm_benchmark.md``).
        ``context="focused"`` costs far less: on one seed of the same datasets (step 17,927) mean
        R² was 0.655 global, 0.665 focused and 0.675 mixed
        (``benchmarks/results/tabfm_focused_context_regression.md``).
        ``context="global"`` is the fast choice, and the one ``tabfm export`` (ONNX) needs.
    local_metric : {"relevance", "uniform"}, default "relevance"
        As for :class:`TabFMClassifier`, with the standardised target. The regressor's local
        members read a table of their own neighbours, so who those neighbours are decides much:
        on the headline's splits (20 datasets, 3 seeds, step 18,467) ``"relevance"`` raised mean
        R² from 0.6874 to 0.6911, better on 14 datasets and worse on 3 (4544_GeographicalOriginalofMusic
        +0.020, 225_puma8NH +0.013, 197_cpu_act +0.012; 547_no2 −0.004, 201_pol −0.004), and the
        normalised R² against LightGBM and XGBoost from 0.620 to 0.741 (LightGBM 0.685 → 0.679)
        (``benchmarks/results/tabfm_local_metric.md``). On 197_cpu_act, for instance, unweighted
        neighbours of rows whose target is 0 had targets near 87, and the local members followed them.
    linear_feature : {"all", "mixed", "none"}, default "all"
        As for :class:`TabFMClassifier`, with one column: the ridge prediction of the standardised
        target. With step 17,967 on the 20 regression datasets (3 seeds) mean R² was 0.6619
        (``"none"``), 0.6791 (``"mixed"``) and 0.6844 (``"all"``, better on 15 and worse on 4:
        loan_interest_rate +0.071, 574_house_16H +0.063, 4544_GeographicalOriginalofMusic +0.062,
        food_deliveries +0.056; hitters_salary −0.011) (``benchmarks/results/tabfm_linear_feature.md``).
    linear_basis : {"auto", "linear", "hinge"}, default "auto"
        What the ridge fits per numeric column: a line (``"linear"``), a piecewise-linear curve
        (``"hinge"``: ``max(0, q - knot)`` of the column's quantile-normal value ``q`` at five
        knots, an additive model), or whichever has the smaller leave-one-out error on the
        training rows (``"auto"``). With the shipped step 18,467 on the 20 regression datasets
        (3 seeds) mean R² was 0.6845 (``"linear"``) and 0.6874 (``"auto"``, better on 10 and worse
        on 4: 574_house_16H +0.032, food_deliveries +0.009; 201_pol −0.004, 207_autoPrice −0.003)
        (``benchmarks/results/tabfm_linear_basis.md``). Pretraining's ridge columns were linear.
    checkpoint, max_context_rows, max_features, batch_size, cell_grid, local_rows, categorical_features, device, random_state
        As for :class:`TabFMClassifier`.

    Examples
    --------
    >>> from sklearn.datasets import load_diabetes
    >>> from tabfm import TabFMRegressor
    >>> X, y = load_diabetes(return_X_y=True)
    >>> reg = TabFMRegressor(n_estimators=1).fit(X[:300], y[:300])
    >>> reg.predict(X[300:], output="quantiles", quantiles=[0.1, 0.9]).shape
    (142, 2)
    """

    def __init__(
        self,
        *,
        n_estimators: int = 4,
        softmax_temperature: float = 1.0,
        numeric_transform: str = "none",
        categorical_transform: str = "mixed",
        target_transform: str = "none",
        checkpoint: Any = None,
        max_context_rows: int | None = 10_000,
        max_features: int | None = 200,
        batch_size: int = 1024,
        cell_grid: int | None = 256,
        context: str = "mixed",
        local_rows: int = 128,
        local_anchor_rows: int | None = 4,
        local_metric: str = "relevance",
        linear_feature: str = "all",
        linear_basis: str = "auto",
        categorical_features: Any = None,
        device: str = "auto",
        random_state: Any = 0,
    ) -> None:
        self.n_estimators = n_estimators
        self.softmax_temperature = softmax_temperature
        self.numeric_transform = numeric_transform
        self.categorical_transform = categorical_transform
        self.target_transform = target_transform
        self.checkpoint = checkpoint
        self.max_context_rows = max_context_rows
        self.max_features = max_features
        self.batch_size = batch_size
        self.cell_grid = cell_grid
        self.context = context
        self.local_rows = local_rows
        self.local_anchor_rows = local_anchor_rows
        self.local_metric = local_metric
        self.linear_feature = linear_feature
        self.linear_basis = linear_basis
        self.categorical_features = categorical_features
        self.device = device
        self.random_state = random_state

    def _fit_encoded(self, X_enc: np.ndarray, y_enc: np.ndarray, rng: np.random.Generator) -> None:
        _check_choice("target_transform", self.target_transform, TARGET_TRANSFORMS)
        self.y_mean_ = float(np.mean(y_enc))
        self.y_std_ = float(np.std(y_enc)) or 1.0
        self.target_quantiles_ = TargetQuantiles().fit(y_enc) if self.target_transform != "none" else None
        super()._fit_encoded(X_enc, y_enc, rng)

    def _target_quantile(self, index: int) -> bool:
        return self.target_transform == "quantile" or (self.target_transform == "mixed" and index % 2 == 1)

    def _standardised_targets(self) -> np.ndarray:
        return (self.y_train_ - self.y_mean_) / self.y_std_

    def _member_targets(self, member: Member) -> np.ndarray:
        """The member's training targets: standardised, or through the target's quantile-normal map."""
        if member.target_quantile:
            return self.target_quantiles_.transform(self.y_train_)
        return self._standardised_targets()

    def _train_targets(self, member: Member) -> np.ndarray:
        return self._member_targets(member).astype(np.float32)

    def _ridge_targets(self) -> np.ndarray | None:
        return self._standardised_targets()[:, None]

    def _target_state(self) -> dict[str, Any]:
        state: dict[str, Any] = {"y_mean": self.y_mean_, "y_std": self.y_std_}
        if self.target_quantiles_ is not None:
            state["quantiles"] = self.target_quantiles_.quantiles_.tolist()
            state["references"] = self.target_quantiles_.references_.tolist()
        return state

    def _restore_target(self, state: dict[str, Any]) -> None:
        self.y_mean_, self.y_std_ = float(state["y_mean"]), float(state["y_std"])
        self.target_quantiles_ = None
        if state.get("quantiles") is not None:
            self.target_quantiles_ = TargetQuantiles(len(state["quantiles"]))
            self.target_quantiles_.quantiles_ = np.asarray(state["quantiles"], dtype=np.float64)
            self.target_quantiles_.references_ = np.asarray(state["references"], dtype=np.float64)

    @staticmethod
    def _local_affine(z: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Mean and standard deviation ``(n,)`` of each local context's targets ``z (n, k)``."""
        return z.mean(axis=1), np.maximum(z.std(axis=1), 1e-3)

    def _context_targets(self, member: Member, neighbours: np.ndarray) -> np.ndarray:
        # Each local context is standardised on its own, as every pretraining table was: the bins
        # then resolve the local spread of the target instead of the whole training set's.
        z = self._member_targets(member)[neighbours]
        shift, scale = self._local_affine(z)
        return ((z - shift[:, None]) / scale[:, None]).astype(np.float32)

    def _member_distributions(self, X_enc: np.ndarray) -> list[_MemberDistribution]:
        neighbours = self._neighbours(X_enc)
        affine: dict[tuple[bool, int | None], tuple[torch.Tensor, torch.Tensor]] = {}
        warp = _QuantileWarp(self.target_quantiles_, self.y_mean_, self.y_std_) if self.target_quantiles_ is not None else None
        out = []
        for member, member_logits in zip(self.members_, self._all_member_logits(X_enc, neighbours), strict=True):
            logits = torch.as_tensor(member_logits).double() / self.softmax_temperature
            shift, scale = 0.0, 1.0  # global and focused members bin the member's own global scale
            if member.local:
                kind = (member.target_quantile, member.neighbourhood)  # the rows its context held
                if kind not in affine:
                    s, c = self._local_affine(self._member_targets(member)[neighbours[:, : member.neighbourhood]])
                    affine[kind] = (torch.as_tensor(s)[:, None], torch.as_tensor(c)[:, None])  # (n, 1)
                shift, scale = affine[kind]
            out.append(_MemberDistribution(logits, shift, scale, warp if member.target_quantile else None))
        return out

    def _quantiles(self, X_enc: np.ndarray, levels: list[float]) -> np.ndarray:
        """Quantiles ``(n, len(levels))`` of the members' mixture, in the target's units."""
        bar = self.network_.bar_distribution.cpu()
        members = self._member_distributions(X_enc)
        if len({(m.local, m.target_quantile) for m in self.members_}) == 1:
            # One scale for all: mix the bins directly (each map is monotone, so quantiles follow).
            mixture = torch.logsumexp(torch.stack([torch.log_softmax(m.logits, -1) for m in members]), 0)
            z = members[0].to_standardised(bar.quantile(mixture, levels) * members[0].scale + members[0].shift)
        else:
            # The members bin different scales: bisect the mixture's CDF, which at level q lies
            # between the smallest and the largest member quantile.
            q = torch.as_tensor(levels, dtype=torch.float64)
            each = torch.stack([m.quantile(bar, levels) for m in members])
            lo, hi = each.amin(0), each.amax(0)  # (n, Q)
            for _ in range(50):
                mid = 0.5 * (lo + hi)
                cdf = sum(m.cdf(bar, mid) for m in members) / len(members)
                below = cdf < q
                lo, hi = torch.where(below, mid, lo), torch.where(below, hi, mid)
            z = 0.5 * (lo + hi)
        return z.numpy() * self.y_std_ + self.y_mean_

    def _predict_encoded(self, X_enc: np.ndarray) -> np.ndarray:
        bar = self.network_.bar_distribution.cpu()
        members = self._member_distributions(X_enc)
        z = sum(m.mean(bar) for m in members) / len(members)
        return np.asarray(z, dtype=np.float64).reshape(len(X_enc)) * self.y_std_ + self.y_mean_

    def predict(self, X: Any, output: str = "mean", quantiles: Any = None) -> np.ndarray:
        """Predict the mean (default), the ``"median"``, or ``"quantiles"`` (shape (n, len(quantiles)))."""
        if output == "mean":
            return super().predict(X)
        if output not in ("median", "quantiles"):
            raise TabFMValidationError(f"output must be 'mean', 'median' or 'quantiles', however: output={output!r}")
        X_enc = self._transform(X)
        if output == "median":
            return self._quantiles(X_enc, [0.5])[:, 0]
        q = np.atleast_1d(np.asarray(quantiles if quantiles is not None else [0.1, 0.5, 0.9], dtype=np.float64))
        if np.any((q <= 0) | (q >= 1)):
            raise TabFMValidationError(f"quantiles must lie strictly between 0 and 1, however: quantiles={q.tolist()}")
        return self._quantiles(X_enc, q.tolist()).reshape(len(X_enc), len(q))
