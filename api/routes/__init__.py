"""One router per resource: health and metrics, models, predict, Open Inference Protocol v2."""
