"""Reading a /metrics answer: samples by name and labels, in any label order.

A plain module (the tests folder has no packages), used by the metrics tests.
"""

from __future__ import annotations

from prometheus_client.parser import text_string_to_metric_families


def samples(text: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    """Every sample in an exposition, keyed by name and label set."""
    found: dict[tuple[str, frozenset[tuple[str, str]]], float] = {}
    for family in text_string_to_metric_families(text):
        for item in family.samples:
            found[(item.name, frozenset(item.labels.items()))] = item.value
    return found


def sample(text: str, name: str, **labels: str) -> float:
    """The value of one sample, which must be present."""
    key = (name, frozenset(labels.items()))
    found = samples(text)
    assert key in found, f"no sample {name}{labels} in:\n{text}"
    return found[key]


def types(text: str) -> dict[str, str]:
    """Each metric's type as its `# TYPE` line gives it."""
    declared: dict[str, str] = {}
    for line in text.splitlines():
        if line.startswith("# TYPE "):
            _, _, name, kind = line.split(" ", 3)
            declared[name] = kind
    return declared
