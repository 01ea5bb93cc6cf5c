"""Prometheus metrics in the text exposition format, kept by hand (no client library needed)."""

from __future__ import annotations

import bisect
import threading
from collections import defaultdict

BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)


class Metrics:
    """Request counts by route, method and status, and a latency histogram per route."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._requests: dict[tuple[str, str, int], int] = defaultdict(int)
        self._buckets: dict[tuple[str, str], list[int]] = {}
        self._sums: dict[tuple[str, str], float] = defaultdict(float)
        self._counts: dict[tuple[str, str], int] = defaultdict(int)
        self.rows_predicted = 0

    def observe(self, route: str, method: str, status: int, seconds: float) -> None:
        key = (route, method)
        with self._lock:
            self._requests[(route, method, status)] += 1
            counts = self._buckets.setdefault(key, [0] * (len(BUCKETS) + 1))
            counts[bisect.bisect_left(BUCKETS, seconds)] += 1
            self._sums[key] += seconds
            self._counts[key] += 1

    def add_rows(self, n: int) -> None:
        with self._lock:
            self.rows_predicted += n

    def render(self, gauges: dict[str, tuple[str, dict[tuple[tuple[str, str], ...], float]]]) -> str:
        """The exposition text; ``gauges`` maps a name to (help, {labels: value})."""
        lines = [
            "# HELP tabfm_http_requests_total HTTP requests by route template, method and status.",
            "# TYPE tabfm_http_requests_total counter",
        ]
        with self._lock:
            for (route, method, status), n in sorted(self._requests.items()):
                lines.append(f'tabfm_http_requests_total{{route="{_esc(route)}",method="{method}",status="{status}"}} {n}')
            lines += [
                "# HELP tabfm_http_request_duration_seconds Request latency by route template.",
                "# TYPE tabfm_http_request_duration_seconds histogram",
            ]
            for (route, method), counts in sorted(self._buckets.items()):
                labels = f'route="{_esc(route)}",method="{method}"'
                cumulative = 0
                for bound, n in zip((*BUCKETS, float("inf")), counts, strict=True):
                    cumulative += n
                    le = "+Inf" if bound == float("inf") else repr(bound)
                    lines.append(f'tabfm_http_request_duration_seconds_bucket{{{labels},le="{le}"}} {cumulative}')
                lines.append(f"tabfm_http_request_duration_seconds_sum{{{labels}}} {self._sums[(route, method)]:.6f}")
                lines.append(f"tabfm_http_request_duration_seconds_count{{{labels}}} {self._counts[(route, method)]}")
            lines += [
                "# HELP tabfm_rows_predicted_total Rows predicted by all routes.",
                "# TYPE tabfm_rows_predicted_total counter",
                f"tabfm_rows_predicted_total {self.rows_predicted}",
            ]
        for name, (help_text, values) in gauges.items():
            lines += [f"# HELP {name} {help_text}", f"# TYPE {name} gauge"]
            for labels, value in sorted(values.items()):
                text = ",".join(f'{k}="{_esc(v)}"' for k, v in labels)
                lines.append(f"{name}{{{text}}} {value:g}" if text else f"{name} {value:g}")
        return "\n".join(lines) + "\n"


def _esc(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
