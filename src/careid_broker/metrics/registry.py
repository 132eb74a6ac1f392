"""The metric types and their registry, over prometheus_client; one scrape covers every
worker.

In one process (tests, `flask run`) a `Registry` keeps its values in memory. Under
`careid-broker serve` the master calls `use_multiprocess_directory()` before it forks:
each worker then writes its values to memory-mapped files in that private directory,
and whichever worker answers a scrape reads all the files (`MultiProcessCollector`), so
/metrics on one instance reports the sum over its workers, including workers that have
died since (their counters stay until the instance restarts, which Prometheus reads as
the counter reset it is).

Values computed when scraped (`Registry.gauge`: the logout backlog, from the database)
are custom collectors run by the worker that answers; they must never depend on that
worker's own state.

This package is the only place that imports prometheus_client.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Literal

import prometheus_client
from prometheus_client import (
    CONTENT_TYPE_PLAIN_0_0_4,
    CollectorRegistry,
    disable_created_metrics,
    generate_latest,
    multiprocess,
    values,
)
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.metrics import MetricWrapperBase

#: The variable prometheus_client reads for its multiprocess directory.
MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"

CONTENT_TYPE = CONTENT_TYPE_PLAIN_0_0_4

# Request latencies: a sign-in is a few directory and database round trips.
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)

# `*_created` series are each process's start time: meaningless summed over workers, and
# never part of the broker's exposition.
disable_created_metrics()  # type: ignore[no-untyped-call]

#: How a scrape combines the workers' values of a `ProcessGauge` (prometheus_client's
#: multiprocess modes; the `live` ones forget a worker once it has exited).
GaugeMode = Literal["livesum", "livemax", "livemin", "mostrecent", "max", "min"]


def use_multiprocess_directory(directory: Path) -> None:
    """Keep this process's values, and those of the workers it forks, in `directory`."""
    os.environ[MULTIPROC_ENV] = str(directory)
    # prometheus_client picks its value store from the environment when first imported,
    # and the broker imports it long before `serve` knows it will fork workers. Metrics
    # are made in each worker after the fork, and read the store chosen here.
    values.ValueClass = values.MultiProcessValue()  # type: ignore[no-untyped-call]


def worker_exited(pid: int, directory: Path) -> None:
    """Forget an exited worker's live gauges (its counters and histograms stay)."""
    multiprocess.mark_process_dead(pid, str(directory))  # type: ignore[no-untyped-call]


def _label_values(metric: str, names: Sequence[str], given: Mapping[str, str]) -> dict[str, str]:
    if set(given) != set(names):
        raise ValueError(f"{metric} takes labels {tuple(names)}, got {sorted(given)}")
    return {name: str(given[name]) for name in names}


def _sample(metric: MetricWrapperBase, sample_name: str, labels: Mapping[str, str]) -> float:
    for family in metric.collect():
        for sample in family.samples:
            if sample.name == sample_name and sample.labels == labels:
                return float(sample.value)
    return 0.0


class _Wrapped:
    """A prometheus_client metric called as the broker always has: labels as keywords."""

    def __init__(self, name: str, labels: Sequence[str], metric: MetricWrapperBase) -> None:
        self.name = name
        self.labels = tuple(labels)
        self._metric = metric
        # Each series once checked and looked up, then found by the labels as given:
        # a request counts into a handful of series, many times a second.
        self._children: dict[tuple[tuple[str, str], ...], MetricWrapperBase] = {}

    def _labelled(self, labels: Mapping[str, str]) -> dict[str, str]:
        return _label_values(self.name, self.labels, labels)

    def _child(self, labels: Mapping[str, str]) -> MetricWrapperBase:
        if not self.labels:
            if labels:
                raise ValueError(f"{self.name} takes no labels, got {sorted(labels)}")
            return self._metric
        key = tuple(labels.items())
        child = self._children.get(key)
        if child is None:
            child = self._metric.labels(**self._labelled(labels))
            self._children[key] = child
        return child


class Counter(_Wrapped):
    """A count that only goes up."""

    def __init__(
        self,
        name: str,
        documentation: str,
        labels: Sequence[str] = (),
        *,
        registry: CollectorRegistry | None,
    ) -> None:
        if not name.endswith("_total"):
            raise ValueError(f"a counter's name ends in _total: {name!r}")
        metric = prometheus_client.Counter(name, documentation, labels, registry=registry)
        super().__init__(name, labels, metric)

    def inc(self, amount: float = 1.0, **labels: str) -> None:
        """Add `amount` (never negative) to the series named by the labels."""
        if amount < 0:
            raise ValueError("a counter only goes up")
        child = self._child(labels)
        assert isinstance(child, prometheus_client.Counter)  # noqa: S101 - made above
        child.inc(amount)

    def value(self, **labels: str) -> float:
        """This process's value of one series (0 when never incremented)."""
        return _sample(self._metric, self.name, self._labelled(labels))


class Histogram(_Wrapped):
    """Observations counted into cumulative buckets, with their sum and count."""

    def __init__(
        self,
        name: str,
        documentation: str,
        labels: Sequence[str] = (),
        *,
        buckets: Iterable[float] = LATENCY_BUCKETS,
        registry: CollectorRegistry | None,
    ) -> None:
        bounds = sorted(set(buckets))
        if not bounds:
            raise ValueError("a histogram needs buckets")
        metric = prometheus_client.Histogram(
            name, documentation, labels, registry=registry, buckets=bounds
        )
        super().__init__(name, labels, metric)
        self.bounds = tuple(bounds)

    def observe(self, value: float, **labels: str) -> None:
        """Record one observation (e.g. a request's duration in seconds)."""
        child = self._child(labels)
        assert isinstance(child, prometheus_client.Histogram)  # noqa: S101 - made above
        child.observe(value)

    def count(self, **labels: str) -> int:
        """How many observations one series has in this process."""
        return int(_sample(self._metric, f"{self.name}_count", self._labelled(labels)))


class ProcessGauge(_Wrapped):
    """A value each worker sets for itself; a scrape combines the workers' by `mode`."""

    def __init__(
        self,
        name: str,
        documentation: str,
        labels: Sequence[str] = (),
        *,
        mode: GaugeMode,
        registry: CollectorRegistry | None,
    ) -> None:
        metric = prometheus_client.Gauge(
            name, documentation, labels, registry=registry, multiprocess_mode=mode
        )
        super().__init__(name, labels, metric)
        self.mode = mode

    def _gauge(self, labels: Mapping[str, str]) -> prometheus_client.Gauge:
        child = self._child(labels)
        assert isinstance(child, prometheus_client.Gauge)  # noqa: S101 - made above
        return child

    def set(self, value: float, **labels: str) -> None:
        """Set this worker's value."""
        self._gauge(labels).set(value)

    def inc(self, amount: float = 1.0, **labels: str) -> None:
        """Raise this worker's value."""
        self._gauge(labels).inc(amount)

    def dec(self, amount: float = 1.0, **labels: str) -> None:
        """Lower this worker's value."""
        self._gauge(labels).dec(amount)

    def value(self, **labels: str) -> float:
        """This worker's value of one series."""
        return _sample(self._metric, self.name, self._labelled(labels))


class Gauge:
    """A value read when scraped (a callback; None means "unknown now": not shown)."""

    def __init__(self, name: str, documentation: str, read: Callable[[], float | None]) -> None:
        self.name = name
        self.labels: tuple[str, ...] = ()
        self.documentation = documentation
        self._read = read

    def describe(self) -> Iterable[Metric]:
        """The family without reading it (so registering it costs no query)."""
        return [GaugeMetricFamily(self.name, self.documentation)]

    def collect(self) -> Iterable[Metric]:
        """The family, with its value when `read` knows one."""
        family = GaugeMetricFamily(self.name, self.documentation)
        value = self._read()
        if value is not None:
            family.add_metric([], value)
        return [family]


_AnyMetric = Counter | Histogram | ProcessGauge | Gauge


class Registry:
    """The metrics of one app; `counter()` etc. return the existing metric for a name.

    With `multiprocess_dir` the values live in that directory's files (the process must
    have called `use_multiprocess_directory`), and `render()` reads every process's.
    """

    def __init__(self, *, multiprocess_dir: Path | None = None) -> None:
        self.multiprocess_dir = multiprocess_dir
        self._exposed = CollectorRegistry()
        # In multiprocess mode the collector reads this worker's values from its files
        # with everyone else's: registering the metrics too would export them twice.
        self._own: CollectorRegistry | None = self._exposed
        if multiprocess_dir is not None:
            multiprocess.MultiProcessCollector(  # type: ignore[no-untyped-call]
                self._exposed, path=str(multiprocess_dir)
            )
            self._own = None
        self._metrics: dict[str, _AnyMetric] = {}
        self._lock = threading.Lock()

    @classmethod
    def from_environment(cls) -> Registry:
        """Multiprocess when prometheus_client's variable names a directory, else not."""
        directory = os.environ.get(MULTIPROC_ENV)
        return cls(multiprocess_dir=Path(directory) if directory else None)

    def _get_or_add(
        self,
        name: str,
        kind: type[_AnyMetric],
        labels: Sequence[str],
        make: Callable[[], _AnyMetric],
    ) -> _AnyMetric:
        with self._lock:
            existing = self._metrics.get(name)
            if existing is None:
                metric = self._metrics[name] = make()
                return metric
        if type(existing) is not kind or existing.labels != tuple(labels):
            raise ValueError(f"metric {name} already exists with another shape")
        return existing

    def counter(self, name: str, documentation: str, labels: Sequence[str] = ()) -> Counter:
        """The counter of that name, registering it the first time."""
        metric = self._get_or_add(
            name,
            Counter,
            labels,
            lambda: Counter(name, documentation, labels, registry=self._own),
        )
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
        metric = self._get_or_add(
            name,
            Histogram,
            labels,
            lambda: Histogram(name, documentation, labels, buckets=buckets, registry=self._own),
        )
        assert isinstance(metric, Histogram)  # noqa: S101 - checked in _get_or_add
        return metric

    def process_gauge(
        self, name: str, documentation: str, labels: Sequence[str] = (), *, mode: GaugeMode
    ) -> ProcessGauge:
        """A gauge each worker sets, combined over the workers by `mode` when scraped."""
        metric = self._get_or_add(
            name,
            ProcessGauge,
            labels,
            lambda: ProcessGauge(name, documentation, labels, mode=mode, registry=self._own),
        )
        assert isinstance(metric, ProcessGauge)  # noqa: S101 - checked in _get_or_add
        return metric

    def gauge(self, name: str, documentation: str, read: Callable[[], float | None]) -> Gauge:
        """A gauge read by calling `read` at each scrape, in the worker that answers it."""

        def make() -> Gauge:
            gauge = Gauge(name, documentation, read)
            self._exposed.register(gauge)
            return gauge

        metric = self._get_or_add(name, Gauge, (), make)
        assert isinstance(metric, Gauge)  # noqa: S101 - checked in _get_or_add
        return metric

    def names(self) -> dict[str, tuple[str, ...]]:
        """Every metric's name and label names."""
        with self._lock:
            return {name: metric.labels for name, metric in self._metrics.items()}

    def render(self) -> str:
        """The exposition text (format 0.0.4) for every metric."""
        return generate_latest(self._exposed).decode()
