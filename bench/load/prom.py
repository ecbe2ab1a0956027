"""Reading relay's /metrics (Prometheus text format 0.0.4) for the load benchmark.

Owns: parsing a scrape into plain values and histograms, the difference of two scrapes (what
happened in a window), and quantiles from a histogram's buckets (linear interpolation inside
the bucket, as Prometheus' histogram_quantile does). A metric that is absent reads as None, so
the benchmark reports "n/a" for figures this relay does not export yet.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from typing import Optional

_LINE = re.compile(r'^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{[^}]*\})?\s+(\S+)')
_LE = re.compile(r'le="([^"]+)"')


@dataclass
class Histogram:
    """Cumulative bucket counts by upper bound (the last one +Inf), their sum and count."""

    buckets: list[tuple[float, float]] = field(default_factory=list)
    sum: float = 0.0
    count: float = 0.0

    def minus(self, earlier: Optional["Histogram"]) -> "Histogram":
        if earlier is None:
            return self
        before = dict(earlier.buckets)
        return Histogram([(b, n - before.get(b, 0.0)) for b, n in self.buckets],
                         self.sum - earlier.sum, self.count - earlier.count)

    def quantile(self, q: float) -> Optional[float]:
        """The q-quantile (None when empty); past the last finite bound, that bound."""
        if self.count <= 0 or not self.buckets:
            return None
        rank = q * self.count
        lower, below = 0.0, 0.0
        for bound, cumulative in self.buckets:
            if cumulative >= rank:
                if math.isinf(bound):
                    return lower
                if cumulative == below:
                    return bound
                return lower + (bound - lower) * (rank - below) / (cumulative - below)
            lower, below = bound, cumulative
        return lower

    def share_over(self, bound: float) -> Optional[float]:
        """The share of observations over `bound`, one of the bucket bounds (None when empty
        or when bound is not one of them)."""
        if self.count <= 0:
            return None
        at_most = dict(self.buckets).get(bound)
        return None if at_most is None else (self.count - at_most) / self.count

    def mean(self) -> Optional[float]:
        return self.sum / self.count if self.count > 0 else None


@dataclass
class Scrape:
    """One /metrics scrape: unlabelled samples by name, labelled ones summed by name, and
    histograms by family name."""

    values: dict[str, float] = field(default_factory=dict)
    histograms: dict[str, Histogram] = field(default_factory=dict)
    declared: set[str] = field(default_factory=set)      # families with a # TYPE line

    @classmethod
    def parse(cls, text: str) -> "Scrape":
        scrape = cls()
        types = [line.split() for line in text.splitlines() if line.startswith("# TYPE ")]
        scrape.declared = {t[2] for t in types if len(t) > 3}
        hist_families = {t[2] for t in types if len(t) > 3 and t[3] == "histogram"}
        for line in text.splitlines():
            match = _LINE.match(line)
            if not match:
                continue
            name, labels, raw = match.groups()
            try:
                value = float(raw)
            except ValueError:
                continue
            family = name.rsplit("_", 1)[0]
            if family in hist_families:
                hist = scrape.histograms.setdefault(family, Histogram())
                suffix = name[len(family) + 1:]
                if suffix == "bucket":
                    le = _LE.search(labels or "")
                    if le:
                        hist.buckets.append((float(le.group(1)), value))
                elif suffix == "sum":
                    hist.sum = value
                elif suffix == "count":
                    hist.count = value
                continue
            scrape.values[name] = scrape.values.get(name, 0.0) + value
        for hist in scrape.histograms.values():
            hist.buckets.sort()
        return scrape

    def value(self, name: str) -> Optional[float]:
        """The sample (labelled ones summed); 0 for a declared family with no samples yet;
        None when this relay does not export it."""
        if name in self.values:
            return self.values[name]
        return 0.0 if name in self.declared else None

    def histogram(self, name: str) -> Optional[Histogram]:
        return self.histograms.get(name)


def delta(later: Scrape, earlier: Scrape, name: str) -> Optional[float]:
    a, b = later.value(name), earlier.value(name)
    return None if a is None or b is None else a - b


def histogram_delta(later: Scrape, earlier: Optional[Scrape], name: str
                    ) -> Optional[Histogram]:
    hist = later.histogram(name)
    if hist is None:
        return None
    return hist.minus(earlier.histogram(name) if earlier is not None else None)


def quantiles_ms(hist: Optional[Histogram]) -> Optional[dict]:
    """{count, p50, p99, mean} in milliseconds of a histogram in seconds; None if absent."""
    if hist is None:
        return None
    def ms(x: Optional[float]) -> Optional[float]:
        return None if x is None else x * 1000.0
    return {"count": int(hist.count), "p50": ms(hist.quantile(0.5)),
            "p99": ms(hist.quantile(0.99)), "mean": ms(hist.mean())}
