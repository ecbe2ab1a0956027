"""One Prometheus exposition out of several: the fleet's /metrics from the workers' texts.

Owns: reading the text format 0.0.4 as relay writes it (`# HELP`, `# TYPE`, samples with
optional labels and an optional timestamp, which is dropped), and adding the texts up: samples
with the same name and the same labels (in any order) are summed, whatever their type —
counters, gauges (so `relay_ari_connected` becomes the number of workers connected), histogram
buckets, sums and counts. Each family keeps its first HELP and TYPE line, once, and its samples
stay together under them, in the order they were first seen (the first worker's order, so `le`
buckets stay increasing). A line that cannot be read is skipped and counted, never fatal; a
family whose TYPE disagrees with the first one seen keeps the first, and the disagreeing
source's samples of it are skipped (counted the same way). A source's families whose names
start with one of its `skip` prefixes are left out. No I/O.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from typing import Iterable, Optional

NAME = r"[a-zA-Z_:][a-zA-Z0-9_:]*"
SAMPLE = re.compile(rf"^({NAME})(?:\{{(.*)\}})?[ \t]+(\S+)(?:[ \t]+-?\d+)?[ \t]*$")
LABEL = re.compile(r'[ \t]*([a-zA-Z_][a-zA-Z0-9_]*)[ \t]*=[ \t]*"((?:[^"\\]|\\.)*)"[ \t]*(,|$)')
META = re.compile(rf"^#[ \t]+(HELP|TYPE)[ \t]+({NAME})(?:[ \t]+(.*))?$")
TYPES = ("counter", "gauge", "histogram", "summary", "untyped")
SUFFIXES = {"_bucket": ("histogram",), "_sum": ("histogram", "summary"),
            "_count": ("histogram", "summary"), "_total": ("counter",)}


def parse_value(text: str) -> float:
    """A sample value (ValueError when it is not one)."""
    lowered = text.lower()
    if lowered in ("+inf", "inf"):
        return math.inf
    if lowered == "-inf":
        return -math.inf
    if lowered == "nan":
        return math.nan
    return float(text)


def format_value(value: float) -> str:
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    if value == int(value) and abs(value) < 2 ** 53:
        return str(int(value))
    return repr(value)


def parse_labels(text: str) -> Optional[tuple[tuple[str, str], ...]]:
    """The labels of a sample as (name, escaped value) pairs, or None when malformed."""
    labels, position = [], 0
    text = text.strip()
    while position < len(text):
        match = LABEL.match(text, position)
        if match is None:
            return None
        labels.append((match.group(1), match.group(2)))
        position = match.end()
    return tuple(labels)


@dataclass
class Family:
    name: str
    kind: str = "untyped"
    help: Optional[str] = None
    typed: bool = False
    samples: dict = field(default_factory=dict)     # key -> [name, labels text, value]


class MetricsMerger:
    """add(text) for each source, then text(): the merged exposition."""

    def __init__(self) -> None:
        self.families: dict[str, Family] = {}
        self.bad_lines = 0
        self._skip: tuple[str, ...] = ()

    def add(self, text: str, skip: Iterable[str] = ()) -> None:
        """Add one source's exposition (a worker's /metrics, the fleet's own lines), less
        the families whose names start with a prefix in skip."""
        self._skip = tuple(skip)
        typed_here: dict[str, str] = {}          # this source's TYPE lines
        refused: set[str] = set()                # families whose TYPE disagrees: skipped
        for raw in text.splitlines():
            line = raw.strip()
            if not line:
                continue
            if line.startswith("#"):
                self._meta(line, typed_here, refused)
                continue
            match = SAMPLE.match(line)
            labels = parse_labels(match.group(2) or "") if match else None
            if match is None or labels is None:
                self.bad_lines += 1
                continue
            try:
                value = parse_value(match.group(3))
            except ValueError:
                self.bad_lines += 1
                continue
            name = match.group(1)
            family = self._family_of(name, typed_here)
            if family is None:
                continue                         # skipped by prefix
            if family.name in refused:
                self.bad_lines += 1
                continue
            key = (name, tuple(sorted(labels)))
            sample = family.samples.get(key)
            if sample is None:
                family.samples[key] = [name, match.group(2) or "", value]
            else:
                sample[2] += value

    def _skipped(self, name: str) -> bool:
        return bool(self._skip) and name.startswith(self._skip)

    def _meta(self, line: str, typed_here: dict[str, str], refused: set[str]) -> None:
        match = META.match(line)
        if match is None:
            return                              # a plain comment
        what, name, rest = match.group(1), match.group(2), (match.group(3) or "").strip()
        if self._skipped(name):
            return
        family = self.families.get(name)
        if family is None:
            family = self.families[name] = Family(name)
        if what == "HELP":
            if family.help is None:
                family.help = rest
            return
        kind = rest.lower()
        if kind not in TYPES:
            self.bad_lines += 1
            return
        typed_here[name] = kind
        if not family.typed:
            family.kind, family.typed = kind, True
        elif family.kind != kind:
            refused.add(name)
            self.bad_lines += 1

    def _family_of(self, name: str, typed_here: dict[str, str]) -> Optional[Family]:
        if self._skipped(name):
            return None
        if name in self.families:
            return self.families[name]
        for suffix, kinds in SUFFIXES.items():
            base = name[:-len(suffix)]
            if not name.endswith(suffix) or base not in self.families:
                continue
            known = self.families[base]
            if typed_here.get(base, known.kind if known.typed else None) in kinds:
                return known
        family = self.families[name] = Family(name)   # a sample without HELP/TYPE: untyped
        return family

    def text(self) -> str:
        lines: list[str] = []
        for family in self.families.values():
            if not family.samples and not family.typed:
                continue
            if family.help is not None:
                lines.append(f"# HELP {family.name} {family.help}".rstrip())
            lines.append(f"# TYPE {family.name} {family.kind}")
            for name, labels, value in family.samples.values():
                label_text = "{" + labels + "}" if labels else ""
                lines.append(f"{name}{label_text} {format_value(value)}")
        return "\n".join(lines) + "\n"


def merge(texts: Iterable[str]) -> str:
    """The sum of several expositions (see the module docstring)."""
    merger = MetricsMerger()
    for text in texts:
        merger.add(text)
    return merger.text()
