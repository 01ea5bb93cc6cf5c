"""Request and response schemas of the HTTP API (they are also the OpenAPI document)."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

Kind = Literal["tabfm", "tabm", "tabr"]
Task = Literal["classification", "regression"]
Status = Literal["training", "ready", "failed"]
Scalar = str | float | int | bool | None


# -- estimator parameters a client may set (everything else is the server's choice) -------------


class _Params(BaseModel):
    model_config = ConfigDict(extra="forbid")

    random_state: int | None = Field(0, ge=0, le=2**31 - 1)
    categorical_features: list[str] | None = Field(
        None, max_length=1000, description="columns to treat as categorical besides string/boolean ones"
    )


class TabFMParams(_Params):
    """Parameters of a TabFM model."""

    n_estimators: int = Field(4, ge=1, le=16)
    softmax_temperature: float = Field(
        0.9, gt=0.0, le=10.0, description="default 0.9 for classification, 1.0 for regression"
    )
    numeric_transform: Literal["mixed", "none", "quantile"] = Field(
        "mixed", description="default 'mixed' for classification, 'none' for regression"
    )
    categorical_transform: Literal["native", "mixed", "onehot"] = Field(
        "mixed",
        description="categorical columns of up to 12 levels as codes ('native'), as one 0/1 column per level "
        "('onehot'), or one-hot in members 2, 3, 6, 7, ... ('mixed')",
    )
    max_context_rows: int = Field(
        10_000,
        ge=2,
        le=10_000,
        description="training rows the model reads (a seeded subsample beyond). The shipped networks attend "
        "exactly over them: fitting 10,000 rows takes ~20 s of CPU and the stored ONNX file ~250 MB.",
    )
    max_features: int | None = Field(200, ge=1, le=500)
    context: Literal["global", "focused", "local", "mixed"] = Field(
        "global",
        description="rows a test row reads: all training rows (served through onnxruntime), or with 'focused', "
        "'local' and 'mixed' the local_rows nearest ones in some or all members (served by torch). 'focused' "
        "members read them only in their last blocks, at little cost; local ones run a table of their own per "
        "test row, which is slower to predict. The service defaults to 'global' for both tasks; the library's "
        "TabFMClassifier defaults to 'focused' and its TabFMRegressor to 'mixed' with local_anchor_rows=4, each "
        "of which raised the benchmark's mean score",
    )
    linear_feature: Literal["all", "mixed", "none"] = Field(
        "all",
        description="a ridge regression of the target on all columns enters every member ('all'), members "
        "0, 2, 4, ... ('mixed') or none as extra columns; its leave-one-out predictions on the training rows",
    )
    linear_basis: Literal["auto", "linear", "hinge"] | None = Field(
        None,
        description="what that ridge fits per numeric column: a line ('linear'), a piecewise-linear curve "
        "('hinge'), or whichever has the smaller leave-one-out error ('auto'); omitted: the library's default, "
        "'auto' for regression and 'linear' for classification",
    )
    local_rows: int = Field(128, ge=8, le=2048)
    local_rows_min: int | None = Field(
        32,
        ge=1,
        le=2048,
        description="classification only: with 'focused', every second focused member reads the neighbourhood "
        "size from this up to local_rows (doubling) whose leave-one-out k-NN vote of the training labels is best; "
        "null: all read local_rows",
    )
    local_anchor_rows: int | None = Field(
        None,
        ge=1,
        le=10_000,
        description="null: each test row's local context is its own nearest rows; n: one training row in n is an "
        "anchor and test rows read their nearest anchor's neighbourhood (faster, less accurate)",
    )
    local_metric: Literal["relevance", "uniform"] | None = Field(
        None,
        description="how the search for those nearest rows weighs the columns: by how much of the target each "
        "explains on its own ('relevance') or all alike ('uniform'); omitted: the library's default, "
        "'relevance' for regression and 'uniform' for classification",
    )


class _TrainedParams(_Params):
    random_state: int | None = Field(None, ge=0, le=2**31 - 1)
    max_epochs: int = Field(100, ge=1, description="capped by the server's max_epochs setting")
    patience: int = Field(16, ge=1, le=1000)
    time_limit: float | None = Field(None, gt=0.0, description="seconds; capped by the server's max_training_seconds")
    batch_size: int = Field(256, ge=1, le=65536)
    lr: float | None = Field(None, gt=0.0, le=1.0)
    weight_decay: float | None = Field(None, ge=0.0, le=1.0)
    dropout: float | None = Field(None, ge=0.0, lt=1.0)
    n_bins: int = Field(48, ge=2, le=256)
    d_embedding: int | None = Field(None, ge=0, le=256)
    validation_fraction: float = Field(0.2, gt=0.0, lt=1.0)


class TabMParams(_TrainedParams):
    """Parameters of a TabM model."""

    k: int = Field(32, ge=1, le=64)
    n_blocks: int | None = Field(None, ge=1, le=8)
    d_block: int = Field(512, ge=8, le=2048)
    arch: Literal["tabm", "tabm-mini"] = "tabm"


class TabRParams(_TrainedParams):
    """Parameters of a TabR model."""

    d_main: int = Field(265, ge=8, le=1024)
    context_size: int = Field(96, ge=1, le=512)
    context_dropout: float | None = Field(None, ge=0.0, lt=1.0)
    encoder_n_blocks: int = Field(0, ge=0, le=4)
    predictor_n_blocks: int = Field(1, ge=0, le=4)


PARAMS: dict[str, type[_Params]] = {"tabfm": TabFMParams, "tabm": TabMParams, "tabr": TabRParams}


# -- models ------------------------------------------------------------------------------------


class FeatureSchema(BaseModel):
    """One input column of a model."""

    name: str
    kind: Literal["numeric", "categorical"]
    categories: list[str] | None = Field(None, description="categories seen in training (categorical only)")


class ModelInfo(BaseModel):
    """A stored model: its status and, once ready, what it expects and how it was made."""

    id: str
    name: str
    kind: Kind
    task: Task
    status: Status
    error: str | None = Field(None, description="why the model failed (status 'failed')")
    created: float = Field(description="creation time, seconds since the epoch")
    updated: float
    target: str | None = None
    input_schema: list[FeatureSchema] | None = Field(None, alias="schema", serialization_alias="schema")
    classes: list[Scalar] | None = None
    metrics: dict[str, Any] = Field(default_factory=dict)
    params: dict[str, Any] = Field(default_factory=dict)
    runtime: str | None = Field(None, description="'onnxruntime', or 'torch' when the ONNX export failed")

    model_config = ConfigDict(populate_by_name=True)


class ModelList(BaseModel):
    models: list[ModelInfo]


class PredictResponse(BaseModel):
    """Predictions of a model; probabilities and classes for classifiers only."""

    predictions: list[Scalar]
    probabilities: list[list[float]] | None = None
    classes: list[Scalar] | None = None


class OneShotRequest(BaseModel):
    """In-context prediction in one request: nothing is stored."""

    model_config = ConfigDict(extra="forbid")

    train: list[dict[str, Scalar]] = Field(description="training rows as records, target included", min_length=1)
    test: list[dict[str, Scalar]] = Field(description="rows to predict (same columns, no target)", min_length=1)
    target: str = Field(min_length=1)
    task: Task | None = None
    params: TabFMParams | None = None


class Health(BaseModel):
    status: Literal["ok", "degraded"]
    store: bool
    store_path: str
    onnx: bool = Field(description="the ONNX predictor is available")
    providers: list[str] = Field(description="onnxruntime execution providers available")
    models_loaded: int
    models: dict[str, int] = Field(description="stored models per status")
    runtimes: dict[str, int] = Field(description="loaded models per runtime (torch: ONNX export failed)")
    training_jobs: dict[str, int]


class ErrorResponse(BaseModel):
    detail: Any


# -- Open Inference Protocol v2 -----------------------------------------------------------------


class V2Live(BaseModel):
    live: bool


class V2Ready(BaseModel):
    ready: bool


class V2Tensor(BaseModel):
    name: str
    datatype: str
    shape: list[int]


class V2Metadata(BaseModel):
    name: str
    versions: list[str]
    platform: str
    inputs: list[V2Tensor]
    outputs: list[V2Tensor]
    parameters: dict[str, Any] = Field(default_factory=dict)


class V2ModelReady(BaseModel):
    name: str
    ready: bool


class V2InferInput(BaseModel):
    name: str
    shape: list[int]
    datatype: str
    parameters: dict[str, Any] | None = None
    data: list[Any] | None = None


class V2RequestedOutput(BaseModel):
    name: str
    parameters: dict[str, Any] | None = None


class V2InferRequest(BaseModel):
    id: str | None = None
    parameters: dict[str, Any] | None = None
    inputs: list[V2InferInput]
    outputs: list[V2RequestedOutput] | None = None


class V2OutputTensor(V2Tensor):
    data: list[Any] | None = None
    parameters: dict[str, Any] | None = None


class V2InferResponse(BaseModel):
    model_name: str
    model_version: str | None = None
    id: str | None = None
    outputs: list[V2OutputTensor]


def inline_schema(model: type[BaseModel]) -> dict[str, Any]:
    """The JSON schema of ``model`` with its ``$defs`` substituted in place (for raw request bodies)."""
    schema = model.model_json_schema()
    defs = schema.pop("$defs", {})

    def resolve(node: Any) -> Any:
        if isinstance(node, dict):
            ref = node.get("$ref")
            if isinstance(ref, str) and ref.startswith("#/$defs/"):
                return resolve(defs[ref.removeprefix("#/$defs/")])
            return {k: resolve(v) for k, v in node.items()}
        if isinstance(node, list):
            return [resolve(v) for v in node]
        return node

    return resolve(schema)
