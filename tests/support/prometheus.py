"""/metrics read the way Prometheus reads it: prometheus_client's own parser."""

from __future__ import annotations

from dataclasses import dataclass

from prometheus_client.parser import text_string_to_metric_families

#: The config of a console whose /metrics the test client (127.0.0.1) scrapes freely.
PASSWORD = "correct horse battery staple"
CONSOLE = {
    "password": PASSWORD,
    "allowed_networks": ["10.0.0.0/8", "127.0.0.0/8"],
    "metrics_networks": ["127.0.0.1/32"],
}


@dataclass(frozen=True)
class Sample:
    name: str
    labels: dict[str, str]
    value: float


class Scrape:
    """Every sample of one /metrics answer, and the families' types."""

    def __init__(self, text: str) -> None:
        self.types: dict[str, str] = {}
        self.samples: list[Sample] = []
        for family in text_string_to_metric_families(text):
            self.types[family.name] = family.type
            self.samples.extend(Sample(s.name, dict(s.labels), s.value) for s in family.samples)

    def value(self, name: str, **labels: str) -> float:
        """The sum of the samples called ``name`` whose labels include ``labels``."""
        return sum(
            s.value
            for s in self.samples
            if s.name == name and all(s.labels.get(k) == v for k, v in labels.items())
        )

    def label_values(self, label: str) -> set[str]:
        """Every value ``label`` has in any sample."""
        return {s.labels[label] for s in self.samples if label in s.labels}
