"""
Metrics as an administrator's Prometheus sees them: the text format parsed
with prometheus_client's own parser into one value per sample.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def parseSamples(text: str) -> Samples:
    """
    Every sample of a scrape, by its name and labels.
    """
    found: Samples = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            found[(sample.name, frozenset(sample.labels.items()))] = sample.value
    return found


def scrape(registry: CollectorRegistry) -> Samples:
    """
    What a scrape of C{registry} shows, parsed.
    """
    return parseSamples(generate_latest(registry).decode("utf-8"))


def value(samples: Samples, name: str, **labels: str) -> float | None:
    """
    The value of sample C{name} with exactly C{labels}, or C{None} if the
    scrape has no such sample.
    """
    return samples.get((name, frozenset(labels.items())))


def family(samples: Samples, name: str) -> dict[frozenset[tuple[str, str]], float]:
    """
    Every sample named C{name}, by its labels.
    """
    return {labels: found for (sampleName, labels), found in samples.items() if sampleName == name}
