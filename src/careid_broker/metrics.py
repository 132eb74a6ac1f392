"""Prometheus metrics in the text exposition format (version 0.0.4), with no dependency.

Values are kept per process. Under gunicorn each worker counts what it served and a
scrape is answered by one worker, so scrape the workers of one instance through
`rate()`/`increase()` (which tolerate the jumps) or run one worker per container; the
limitation is the same as prometheus_client's without its multiprocess directory.
"""

from __future__ import annotations

import math
import re
import threading
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

_NAME = re.compile(r"[a-zA-Z_:][a-zA-Z0-9_:]*")
_LABEL = re.compile(r"[a-zA-Z_][a-zA-Z0-9_]*")

# Request latencies: a sign-in is a few directory and database round trips.
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _format_labels(names: Sequence[str], values: Sequence[str], extra: str = "") -> str:
    parts = [f'{name}="{_escape(value)}"' for name, value in zip(names, values, strict=True)]
    if extra:
        parts.append(extra)
    return "{" + ",".join(parts) + "}" if parts else ""


def _format_number(value: float) -> str:
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    if value == int(value) and abs(value) < 1e15:
        return str(int(value))
    return repr(value)


class _Metric:
    kind = ""

    def __init__(self, name: str, documentation: str, labels: Sequence[str]) -> None:
        if not _NAME.fullmatch(name):
            raise ValueError(f"invalid metric name {name!r}")
        for label in labels:
            if not _LABEL.fullmatch(label) or label.startswith("__") or label == "le":
                raise ValueError(f"invalid label name {label!r}")
        self.name = name
        self.documentation = documentation
        self.labels = tuple(labels)
        self._lock = threading.Lock()

    def _key(self, values: dict[str, str]) -> tuple[str, ...]:
        if set(values) != set(self.labels):
            raise ValueError(f"{self.name} takes labels {self.labels}, got {sorted(values)}")
        return tuple(str(values[label]) for label in self.labels)

    def header(self) -> list[str]:
        text = self.documentation.replace("\\", "\\\\").replace("\n", "\\n")
        return [f"# HELP {self.name} {text}", f"# TYPE {self.name} {self.kind}"]

    def render(self) -> list[str]:
        raise NotImplementedError


class Counter(_Metric):
    """A count that only goes up."""

    kind = "counter"

    def __init__(self, name: str, documentation: str, labels: Sequence[str] = ()) -> None:
        super().__init__(name, documentation, labels)
        self._values: dict[tuple[str, ...], float] = {}

    def inc(self, amount: float = 1.0, **labels: str) -> None:
        """Add `amount` (never negative) to the series named by the labels."""
        if amount < 0:
            raise ValueError("a counter only goes up")
        key = self._key(labels)
        with self._lock:
            self._values[key] = self._values.get(key, 0.0) + amount

    def value(self, **labels: str) -> float:
        """The current value of one series (0 when never incremented)."""
        with self._lock:
            return self._values.get(self._key(labels), 0.0)

    def render(self) -> list[str]:
        with self._lock:
            items = sorted(self._values.items())
        return [
            f"{self.name}{_format_labels(self.labels, key)} {_format_number(value)}"
            for key, value in items
        ]


@dataclass(kw_only=True, slots=True)
class _Buckets:
    counts: list[int]
    total: float = 0.0
    count: int = 0


class Histogram(_Metric):
    """Observations counted into cumulative buckets, with their sum and count."""

    kind = "histogram"

    def __init__(
        self,
        name: str,
        documentation: str,
        labels: Sequence[str] = (),
        *,
        buckets: Iterable[float] = LATENCY_BUCKETS,
    ) -> None:
        super().__init__(name, documentation, labels)
        bounds = sorted(set(buckets))
        if not bounds:
            raise ValueError("a histogram needs buckets")
        self.bounds = tuple(bounds)
        self._series: dict[tuple[str, ...], _Buckets] = {}

    def observe(self, value: float, **labels: str) -> None:
        """Record one observation (e.g. a request's duration in seconds)."""
        key = self._key(labels)
        with self._lock:
            series = self._series.get(key)
            if series is None:
                series = self._series[key] = _Buckets(counts=[0] * len(self.bounds))
            for index, bound in enumerate(self.bounds):
                if value <= bound:
                    series.counts[index] += 1
            series.total += value
            series.count += 1

    def count(self, **labels: str) -> int:
        """How many observations one series has."""
        with self._lock:
            series = self._series.get(self._key(labels))
            return series.count if series else 0

    def render(self) -> list[str]:
        with self._lock:
            items = sorted(
                (key, list(s.counts), s.total, s.count) for key, s in self._series.items()
            )
        lines: list[str] = []
        for key, counts, total, count in items:
            for bound, bucket_count in zip(self.bounds, counts, strict=True):
                le = f'le="{_format_number(bound)}"'
                lines.append(
                    f"{self.name}_bucket{_format_labels(self.labels, key, le)} {bucket_count}"
                )
            inf = 'le="+Inf"'
            lines.append(f"{self.name}_bucket{_format_labels(self.labels, key, inf)} {count}")
            lines.append(
                f"{self.name}_sum{_format_labels(self.labels, key)} {_format_number(total)}"
            )
            lines.append(f"{self.name}_count{_format_labels(self.labels, key)} {count}")
        return lines


class Gauge(_Metric):
    """A value read when scraped (a callback; None means "unknown now": not shown)."""

    kind = "gauge"

    def __init__(self, name: str, documentation: str, read: Callable[[], float | None]) -> None:
        super().__init__(name, documentation, ())
        self._read = read

    def render(self) -> list[str]:
        value = self._read()
        return [] if value is None else [f"{self.name} {_format_number(value)}"]


class Registry:
    """The metrics of one app; `counter()` etc. return the existing metric for a name."""

    def __init__(self) -> None:
        self._metrics: dict[str, _Metric] = {}
        self._lock = threading.Lock()

    def _get_or_add(self, metric: _Metric) -> _Metric:
        with self._lock:
            existing = self._metrics.get(metric.name)
            if existing is None:
                self._metrics[metric.name] = metric
                return metric
        if type(existing) is not type(metric) or existing.labels != metric.labels:
            raise ValueError(f"metric {metric.name} already exists with another shape")
        return existing

    def counter(self, name: str, documentation: str, labels: Sequence[str] = ()) -> Counter:
        """The counter of that name, registering it the first time."""
        metric = self._get_or_add(Counter(name, documentation, labels))
        assert isinstance(metric, Counter)  # noqa: S101 - checked in _get_or_add
        return metric

    def histogram(
        self,
        name: str,
        documentation: str,
        labels: Sequence[str] = (),
        *,
        buckets: Iterable[float] = LATENCY_BUCKETS,
    ) -> Histogram:
        """The histogram of that name, registering it the first time."""
        metric = self._get_or_add(Histogram(name, documentation, labels, buckets=buckets))
        assert isinstance(metric, Histogram)  # noqa: S101 - checked in _get_or_add
        return metric

    def gauge(self, name: str, documentation: str, read: Callable[[], float | None]) -> Gauge:
        """A gauge read by calling `read` at each scrape."""
        metric = self._get_or_add(Gauge(name, documentation, read))
        assert isinstance(metric, Gauge)  # noqa: S101 - checked in _get_or_add
        return metric

    def render(self) -> str:
        """The exposition text for every metric."""
        with self._lock:
            metrics = sorted(self._metrics.values(), key=lambda m: m.name)
        lines: list[str] = []
        for metric in metrics:
            lines.extend(metric.header())
            lines.extend(metric.render())
        return "\n".join(lines) + "\n"


CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


class BrokerMetrics:
    """The broker's own metrics; the OP adds its own through `registry` or `tokens`."""

    def __init__(self, registry: Registry | None = None) -> None:
        self.registry = registry or Registry()
        r = self.registry
        self.signins = r.counter(
            "careid_signins_total",
            "Sign-in attempts by method (password, card) and result (success or error code).",
            ("method", "result"),
        )
        self.requests = r.counter(
            "careid_http_requests_total",
            "HTTP requests by endpoint, method and status code.",
            ("endpoint", "method", "status"),
        )
        self.latency = r.histogram(
            "careid_http_request_duration_seconds",
            "HTTP request latency in seconds by endpoint and method.",
            ("endpoint", "method"),
        )
        self.directory_errors = r.counter(
            "careid_directory_errors_total",
            "Directory operations that failed because the directory did not answer.",
            ("operation",),
        )
        self.csrf_refusals = r.counter(
            "careid_csrf_refusals_total", "Form posts refused for a missing or wrong CSRF token."
        )
        self.tokens = r.counter(
            "careid_token_requests_total",
            "Token endpoint requests by grant type and result (success or OAuth error).",
            ("grant_type", "result"),
        )

    def render(self) -> str:
        """The exposition text."""
        return self.registry.render()
