"""TabR estimators: an MLP that retrieves the nearest training rows, trained on the user's rows.

The recipe follows the TabR paper's untuned "TabR-S" setting: numeric features quantile-mapped to
a normal, categorical features one-hot, no numeric embeddings, ``d_main=265``, one predictor
block, dropout 0.389, context of the 96 nearest training rows, AdamW (lr 3.1e-4, weight decay
1.2e-6, none on biases, normalisation and label embeddings), batches of 256, early stopping on a
held-out 20% of the training rows (patience 16).

While training, every step encodes the candidate rows (the training rows) with gradients and a
row never retrieves itself. For more than ``1.5 * batch_size * context_size`` candidates the
step encodes them without gradients and re-encodes only the retrieved rows with gradients,
which is cheaper. At predict time the candidates' keys are computed once and cached on the
estimator; retrieval is exact top-k in torch, or a faiss index when faiss is installed and there
are more than ``FAISS_MIN_CANDIDATES`` candidates.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from models.numeric_embeddings import compute_quantile_bins
from models.tabr import SearchFn, TabR, TabRConfig
from tabfm.base import TabularClassifier, TabularEstimator, TabularRegressor
from tabfm.training import (
    FeatureEncoder,
    TrainingConfig,
    network_state,
    restore_network,
    split_validation,
    take,
    to_tensors,
    train,
)

# Rows per forward pass at predict: the gathered context keys (rows, context, d_main) are the
# peak (256 x 96 x 265 floats = 26 MB with the defaults; the hidden values are reduced in pieces).
PREDICT_BATCH_ROWS = 256
FAISS_MIN_CANDIDATES = 100_000


def _faiss_search() -> SearchFn | None:
    """An exact L2 search on a faiss flat index, or None when faiss is not installed."""
    try:
        import faiss
    except ImportError:
        return None

    def search(queries: Tensor, candidates: Tensor, m: int, exclude: Tensor | None) -> Tensor:
        index = faiss.IndexFlatL2(candidates.shape[1])
        index.add(candidates.float().cpu().numpy())
        extra = 0 if exclude is None else 1
        _, found = index.search(queries.float().cpu().numpy(), m + extra)
        found = torch.as_tensor(found, device=queries.device)  # (B, m + extra), nearest first
        if exclude is not None:
            # Drop the row itself (or, when absent from the top, the farthest neighbour).
            is_self = found == exclude.unsqueeze(1)
            is_self[:, -1] |= ~is_self.any(1)
            found = found[~is_self].view(found.shape[0], m)
        return found

    return search


class _TabRBase(TabularEstimator):
    """Shared fit/predict of :class:`TabRClassifier` and :class:`TabRRegressor`."""

    def __init__(
        self,
        *,
        d_main: int = 265,
        d_multiplier: float = 2.0,
        encoder_n_blocks: int = 0,
        predictor_n_blocks: int = 1,
        context_size: int = 96,
        dropout: float = 0.389,
        context_dropout: float = 0.389,
        d_embedding: int = 0,
        n_bins: int = 48,
        lr: float = 3.1e-4,
        weight_decay: float = 1.2e-6,
        batch_size: int = 256,
        max_epochs: int | None = 100,
        patience: int = 16,
        time_limit: float | None = None,
        validation_fraction: float = 0.2,
        categorical_features: Any = None,
        device: str = "auto",
        random_state: Any = None,
        verbose: bool = False,
    ) -> None:
        self.d_main = d_main
        self.d_multiplier = d_multiplier
        self.encoder_n_blocks = encoder_n_blocks
        self.predictor_n_blocks = predictor_n_blocks
        self.context_size = context_size
        self.dropout = dropout
        self.context_dropout = context_dropout
        self.d_embedding = d_embedding
        self.n_bins = n_bins
        self.lr = lr
        self.weight_decay = weight_decay
        self.batch_size = batch_size
        self.max_epochs = max_epochs
        self.patience = patience
        self.time_limit = time_limit
        self.validation_fraction = validation_fraction
        self.categorical_features = categorical_features
        self.device = device
        self.random_state = random_state
        self.verbose = verbose

    # -- hooks of the two task sides -----------------------------------------------------------

    def _n_classes_or_none(self) -> int | None:
        raise NotImplementedError

    def _prepare_target(self, y_enc: np.ndarray) -> Tensor:
        raise NotImplementedError

    def _loss(self, out: Tensor, y: Tensor) -> Tensor:
        raise NotImplementedError

    def _score(self, out: Tensor, y: Tensor) -> float:
        raise NotImplementedError

    # -- fit -------------------------------------------------------------------------------------

    def _fit_encoded(self, X_enc: np.ndarray, y_enc: np.ndarray, rng: np.random.Generator) -> None:
        device = self.device_
        training = TrainingConfig(
            lr=self.lr,
            weight_decay=self.weight_decay,
            batch_size=self.batch_size,
            max_epochs=self.max_epochs,
            patience=self.patience,
            time_limit=self.time_limit,
            verbose=self.verbose,
        )
        self.features_ = FeatureEncoder(
            self.preprocessor_.categorical_mask_, self.preprocessor_.cardinalities_
        )
        train_rows, val_rows = split_validation(
            y_enc,
            fraction=self.validation_fraction,
            rng=rng,
            stratify=self._task == "classification",
        )
        if len(train_rows) < 2:
            train_rows = val_rows = np.arange(len(y_enc))
        self.features_.fit(X_enc[train_rows])
        x_num, x_cat = to_tensors(*self.features_.transform(X_enc), device)
        y_all = self._prepare_target(y_enc).to(device)
        self.config_ = TabRConfig(
            n_num_features=self.features_.n_num_inputs,
            n_classes=self._n_classes_or_none(),
            cat_cardinalities=self.features_.cat_cardinalities,
            d_main=self.d_main,
            d_multiplier=self.d_multiplier,
            encoder_n_blocks=self.encoder_n_blocks,
            predictor_n_blocks=self.predictor_n_blocks,
            context_dropout=self.context_dropout,
            dropout0=self.dropout,
            context_size=self.context_size,
            d_embedding=self.d_embedding,
        )
        self.bins_ = None
        if self.d_embedding > 0 and self.config_.n_num_features > 0:
            self.bins_ = compute_quantile_bins(x_num[train_rows].cpu(), n_bins=self.n_bins)
        model = TabR(self.config_, bins=self.bins_).to(device)

        tr = torch.as_tensor(train_rows, device=device)
        va = torch.as_tensor(val_rows, device=device)
        cand_num, cand_cat, cand_y = take(x_num, tr), take(x_cat, tr), y_all[tr]
        val_num, val_cat, val_y = take(x_num, va), take(x_cat, va), y_all[va]
        search = self._search(len(train_rows))
        memory_efficient = len(train_rows) > 1.5 * self.batch_size * self.context_size

        def batch_loss(idx: Tensor) -> Tensor:
            idx = idx.to(device)
            if memory_efficient:
                x, k = model.encode(take(cand_num, idx), take(cand_cat, idx))
                cand_k = model.encode_keys(cand_num, cand_cat)  # no gradients
                ctx = model.retrieve(k, cand_k, self_idx=idx, search=search)  # (B, m)
                flat = ctx.flatten()
                ctx_k = model.encode(take(cand_num, flat), take(cand_cat, flat))[1]  # (B*m, D)
                local = torch.arange(flat.numel(), device=device).view(ctx.shape)
                out = model.mix(x, k, ctx_k, cand_y[flat], local)
            else:
                x_all, k_all = model.encode(cand_num, cand_cat)  # (N, D) with gradients
                x, k = x_all[idx], k_all[idx]
                ctx = model.retrieve(
                    k, k_all, self_idx=idx, search=search
                )  # (B, m), never idx itself
                out = model.mix(x, k, k_all, cand_y, ctx)
            return self._loss(out, cand_y[idx])

        def validation_score() -> float:
            cand_k = model.encode_keys(cand_num, cand_cat)
            out = _predict_batched(model, val_num, val_cat, cand_k, cand_y, search)
            return self._score(out, val_y)

        generator = torch.Generator().manual_seed(int(rng.integers(2**31)))
        self.training_ = train(
            model,
            n_train=len(train_rows),
            batch_loss=batch_loss,
            validation_score=validation_score,
            config=training,
            generator=generator,
            no_decay=_no_decay_names(model).__contains__,
            description=type(self).__name__,
        ).to_dict()
        self.model_ = model
        # The candidates at predict time are the training rows (as in the paper; the validation
        # rows only chose the epoch). Their keys are computed once, here.
        self.candidate_x_num_, self.candidate_x_cat_, self.candidate_y_ = cand_num, cand_cat, cand_y
        self.candidate_k_ = model.encode_keys(cand_num, cand_cat)

    def _search(self, n_candidates: int) -> SearchFn | None:
        return _faiss_search() if n_candidates > FAISS_MIN_CANDIDATES else None

    def _model_outputs(self, X_enc: np.ndarray) -> Tensor:
        x_num, x_cat = to_tensors(*self.features_.transform(X_enc), self.device_)
        self.model_.eval()
        with torch.no_grad():
            search = self._search(self.candidate_k_.shape[0])
            return _predict_batched(
                self.model_, x_num, x_cat, self.candidate_k_, self.candidate_y_, search
            )

    # -- save / load -------------------------------------------------------------------------------

    def _get_state(self) -> tuple[dict[str, Any], dict[str, Tensor]]:
        meta, tensors = network_state(self.model_, self.config_, self.bins_, self.features_, self.training_)
        tensors["candidates.y"] = self.candidate_y_
        tensors["candidates.k"] = self.candidate_k_
        if self.candidate_x_num_ is not None:
            tensors["candidates.x_num"] = self.candidate_x_num_
        if self.candidate_x_cat_ is not None:
            tensors["candidates.x_cat"] = self.candidate_x_cat_
        return {**meta, **self._extra_meta()}, tensors

    def _extra_meta(self) -> dict[str, Any]:
        return {}

    def _set_state(self, meta: dict[str, Any], tensors: dict[str, Tensor]) -> None:
        self.config_, self.bins_, self.features_, self.training_, self.model_ = restore_network(
            meta, tensors, TabRConfig, lambda config, bins: TabR(config, bins=bins), self.preprocessor_, self.device_
        )
        self.candidate_y_ = tensors["candidates.y"]
        self.candidate_k_ = tensors["candidates.k"]
        self.candidate_x_num_ = tensors.get("candidates.x_num")
        self.candidate_x_cat_ = tensors.get("candidates.x_cat")


def _no_decay_names(model: nn.Module) -> set[str]:
    """Biases, normalisation weights and label embeddings train without weight decay."""
    names = set()
    for module_name, module in model.named_modules():
        for param_name, _ in module.named_parameters(recurse=False):
            full = f"{module_name}.{param_name}" if module_name else param_name
            if (
                param_name == "bias"
                or isinstance(module, nn.LayerNorm)
                or module_name.startswith("label_embedding")
            ):
                names.add(full)
    return names


def _predict_batched(
    model: TabR,
    x_num: Tensor | None,
    x_cat: Tensor | None,
    candidate_k: Tensor,
    candidate_y: Tensor,
    search: SearchFn | None,
) -> Tensor:
    n = (x_num if x_num is not None else x_cat).shape[0]
    outs = []
    for i in range(0, n, PREDICT_BATCH_ROWS):
        rows = slice(i, i + PREDICT_BATCH_ROWS)
        outs.append(
            model(
                take(x_num, rows),
                take(x_cat, rows),
                candidate_k=candidate_k,
                candidate_y=candidate_y,
                search=search,
            )
        )
    return torch.cat(outs).float()  # (n, d_out)


class TabRClassifier(TabularClassifier, _TabRBase):
    """TabR classifier: an MLP that mixes in the labels of the 96 nearest training rows.

    Parameters
    ----------
    d_main : int, default=265
        Width of the encoder output, keys and values.
    d_multiplier : float, default=2.0
        Hidden width of blocks and of the value map ``T`` relative to ``d_main``.
    encoder_n_blocks, predictor_n_blocks : int, default=0, 1
        Residual blocks before and after retrieval.
    context_size : int, default=96
        Training rows retrieved per row.
    dropout, context_dropout : float, default=0.389
        Dropout inside blocks and on the retrieval weights.
    d_embedding : int, default=0
        Piecewise-linear embedding width for numeric features (0: none, the TabR-S setting).
    n_bins : int, default=48
        Quantile bins for those embeddings.
    lr, weight_decay : float, default=3.1e-4, 1.2e-6
        AdamW settings.
    batch_size : int, default=256
    max_epochs : int or None, default=100
    patience : int, default=16
    time_limit : float or None, default=None
        Seconds of training after which the best weights so far are kept.
    validation_fraction : float, default=0.2
        Share of the training rows held out for early stopping (they are not retrieved from).
    categorical_features, device, random_state, verbose
        As for every tabfm estimator.

    Attributes
    ----------
    classes_, n_classes_, n_features_in_, feature_names_in_
    training_ : dict
        Epochs run, best epoch and score (negative validation log-loss), why training stopped.

    Notes
    -----
    An epoch costs about rows × ``context_size`` × ``2 * d_main`` operations for the retrieved
    values plus a search over all training rows per batch. On one CPU core, 10,000 rows of
    ``magic`` take 10.4 s per epoch; the default fit stopped early after 29 epochs (5.1 min).
    ``time_limit`` caps a fit.
    """

    def _n_classes_or_none(self) -> int | None:
        return self.n_classes_

    def _prepare_target(self, y_enc: np.ndarray) -> Tensor:
        return torch.as_tensor(y_enc, dtype=torch.long)

    def _loss(self, out: Tensor, y: Tensor) -> Tensor:
        return F.cross_entropy(out, y)

    def _score(self, out: Tensor, y: Tensor) -> float:
        return -float(F.cross_entropy(out, y))

    def _predict_proba_encoded(self, X_enc: np.ndarray) -> np.ndarray:
        return self._model_outputs(X_enc).softmax(-1).cpu().numpy()


class TabRRegressor(TabularRegressor, _TabRBase):
    """TabR regressor, trained on the standardised target; parameters as :class:`TabRClassifier`.

    The early-stopping score is the negative validation RMSE (in standardised units).
    """

    def _n_classes_or_none(self) -> int | None:
        return None

    def _fit_encoded(self, X_enc: np.ndarray, y_enc: np.ndarray, rng: np.random.Generator) -> None:
        y_enc = np.asarray(y_enc, dtype=np.float64)
        self.y_mean_ = float(y_enc.mean())
        std = float(y_enc.std())
        self.y_std_ = std if std > 1e-12 else 1.0
        super()._fit_encoded(X_enc, y_enc, rng)

    def _prepare_target(self, y_enc: np.ndarray) -> Tensor:
        return torch.as_tensor((y_enc - self.y_mean_) / self.y_std_, dtype=torch.float32)

    def _loss(self, out: Tensor, y: Tensor) -> Tensor:
        return F.mse_loss(out.squeeze(-1), y)

    def _score(self, out: Tensor, y: Tensor) -> float:
        return -float((out.squeeze(-1) - y).square().mean().sqrt())

    def _predict_encoded(self, X_enc: np.ndarray) -> np.ndarray:
        pred = self._model_outputs(X_enc).squeeze(-1).double().cpu().numpy()
        return pred * self.y_std_ + self.y_mean_

    def _extra_meta(self) -> dict[str, Any]:
        return {"y_mean": self.y_mean_, "y_std": self.y_std_}

    def _set_state(self, meta: dict[str, Any], tensors: dict[str, Tensor]) -> None:
        self.y_mean_, self.y_std_ = float(meta["y_mean"]), float(meta["y_std"])
        super()._set_state(meta, tensors)
