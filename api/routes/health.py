"""``GET /health`` and ``GET /metrics`` (Prometheus text); both open without a key."""

from __future__ import annotations

from collections import Counter

from fastapi import APIRouter
from fastapi.responses import PlainTextResponse

from api.deps import CacheDep, MetricsDep, SettingsDep, StoreDep, WorkerDep
from api.runtime import onnx_available
from api.schemas import Health

router = APIRouter(tags=["operations"])


def _providers() -> list[str]:
    import onnxruntime

    return list(onnxruntime.get_available_providers())


@router.get("/health", response_model=Health)
def health(store: StoreDep, cache: CacheDep, worker: WorkerDep, settings: SettingsDep) -> Health:
    """Whether the store answers, which runtime and providers serve, how many models are loaded."""
    ok = store.healthy()
    loaded = cache.loaded()
    return Health(
        status="ok" if ok else "degraded",
        store=ok,
        store_path=str(settings.store),
        onnx=onnx_available(),
        providers=_providers(),
        models_loaded=len(loaded),
        models=store.counts() if ok else {},
        runtimes=dict(Counter(f"{m.runtime}:{m.provider}" if m.runtime == "onnxruntime" else m.runtime for m in loaded)),
        training_jobs=worker.stats(),
    )


@router.get("/metrics", response_class=PlainTextResponse)
def metrics(metrics: MetricsDep, store: StoreDep, cache: CacheDep, worker: WorkerDep) -> PlainTextResponse:
    """Prometheus text: requests and latency per route, models per status, training jobs."""
    counts = store.counts()
    stats = worker.stats()
    gauges = {
        "tabfm_models": ("Stored models by status.", {(("status", s),): float(counts.get(s, 0)) for s in ("training", "ready", "failed")}),
        "tabfm_models_loaded": ("Models loaded in memory.", {(): float(len(cache.loaded()))}),
        "tabfm_training_jobs": ("Training jobs by state.", {(("state", k),): float(v) for k, v in stats.items()}),
        "tabfm_training_seconds": ("Seconds spent training.", {(): worker.seconds}),
    }
    return PlainTextResponse(metrics.render(gauges), media_type="text/plain; version=0.0.4")
