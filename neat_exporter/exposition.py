"""``/metrics`` with the snapshot's series encoded by the cycle that built it, not by scrapes.

prometheus_client's encoders do pure-Python work per sample while holding the GIL: a thousand
VMs' series (four per VM) take tens of milliseconds per format, and many times that when
concurrent scrapes compete for the GIL, so scrapers would queue behind each other. Those series
change only when a cycle publishes a new snapshot, so :meth:`Exposition.publish` encodes them
there (plain and gzip-compressed), before swapping them in. Each scrape encodes only the rest,
the few dozen samples of the loop's and the global manager client's counters, which are
therefore always current, and appends it: to the kept text, and to the kept gzip stream by
continuing a copy of its compressor, which yields one ordinary gzip stream.

Only the formats scrapers have asked for are encoded. At 1000 VMs one format costs the cycle
about 50 ms (families 12 ms, encoding 26, gzip 12; bench/bench_exporter.py's "publish");
Prometheus asks for one (OpenMetrics, gzip), so encoding both formats would add another 40 ms to
every cycle for bodies nobody fetches. The first scrape in a new format encodes it for the
current snapshot (concurrent ones wait for that one encoding); from the next cycle on, the cycle
encodes it too.
"""

from __future__ import annotations

import re
import threading
import zlib
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from urllib.parse import parse_qs

from prometheus_client import CollectorRegistry
from prometheus_client.exposition import choose_encoder, gzip_accepted
from prometheus_client.metrics_core import Metric
from prometheus_client.registry import Collector
from prometheus_client.utils import floatToGoString

_OPENMETRICS_END = b"# EOF\n"
_LEGACY_NAME = re.compile(r"[a-zA-Z_:][a-zA-Z0-9_:]*")
_LEGACY_LABEL = re.compile(r"[a-zA-Z_][a-zA-Z0-9_]*")
_GZIP = 16 + zlib.MAX_WBITS  # zlib's window bits for a gzip header and trailer

Encoder = Callable[[Collector], bytes]


class _Families:
    """A fixed list of families in the shape encoders take (anything with ``collect()``)."""

    def __init__(self, families: Iterable[Metric]):
        self._families = list(families)

    def collect(self) -> list[Metric]:
        return self._families


@dataclass(frozen=True)
class _Encoding:
    """The published families in one format."""

    by_family: dict[str, bytes]  # family name -> its lines, for ?name[]= filtered scrapes
    body: bytes  # all of them, without OpenMetrics' closing "# EOF"
    gzip_head: bytes  # body compressed, flushed to a byte boundary, stream left open
    compressor: zlib._Compress  # the stream's state after gzip_head, copied for each scrape


@dataclass(frozen=True)
class _Published:
    families: list[Metric]
    encodings: dict[str, _Encoding]  # by content type; a scrape may add one (under the lock)


class Exposition(Collector):
    """The families of the latest snapshot, as a collector and encoded for :class:`MetricsApp`.

    The cycle calls :meth:`publish`; scrapes read what it published and never see families
    whose encoding is still being made."""

    def __init__(self, families: list[Metric]):
        self._encoders: dict[str, Encoder] = {}  # by content type: the formats asked for
        self._lock = threading.Lock()
        self._published = _Published(families, {})

    def describe(self) -> list:
        return []  # nothing to check names against; the families change every cycle

    def collect(self) -> Iterator[Metric]:
        return iter(self._published.families)

    def publish(self, families: list[Metric]) -> None:
        """Encode ``families`` in every format asked for so far, then show them."""
        with self._lock:
            encoders = dict(self._encoders)
        encodings = {kind: _encode(families, encoder) for kind, encoder in encoders.items()}
        self._published = _Published(families, encodings)  # one reference swap

    def encoding(self, content_type: str, encoder: Encoder) -> tuple[list[Metric], _Encoding]:
        """The published families and their encoding in ``content_type``: kept, or made now if
        no scrape asked for this format before the latest :meth:`publish`."""
        published = self._published
        kept = published.encodings.get(content_type)
        if kept is None:
            with self._lock:  # concurrent first scrapes in a format encode it once
                self._encoders[content_type] = encoder
                published = self._published
                kept = published.encodings.get(content_type)
                if kept is None:
                    kept = published.encodings[content_type] = _encode(published.families, encoder)
        return published.families, kept


class MetricsApp:
    """A WSGI app for ``/metrics``: everything in ``registry``, with the families of
    ``exposition`` from their kept encodings. Those families may be in ``registry`` too; they
    are shown once."""

    def __init__(self, registry: CollectorRegistry, exposition: Exposition):
        self._registry = registry
        self._exposition = exposition

    def __call__(self, environ: dict, start_response: Callable) -> Iterable[bytes]:
        encoder, content_type = choose_encoder(environ.get("HTTP_ACCEPT", ""))
        families, kept = self._exposition.encoding(content_type, encoder)
        wanted = parse_qs(environ.get("QUERY_STRING", "")).get("name[]")
        rest = encoder(
            _Families(
                family
                for family in self._registry.collect()
                if family.name not in kept.by_family and _selected(family, wanted)
            )
        )
        headers = [("Content-Type", content_type)]
        gzipped = gzip_accepted(environ.get("HTTP_ACCEPT_ENCODING", ""))
        if wanted:  # prometheus_client's ?name[]= filter, from the kept encodings too
            body = b"".join(kept.by_family[f.name] for f in families if _selected(f, wanted))
            body += rest
            body = zlib.compress(body, 6, wbits=_GZIP) if gzipped else body
        elif gzipped:
            compressor = kept.compressor.copy()
            body = kept.gzip_head + compressor.compress(rest) + compressor.flush()
        else:
            body = kept.body + rest
        if gzipped:
            headers.append(("Content-Encoding", "gzip"))
        headers.append(("Content-Length", str(len(body))))
        start_response("200 OK", headers)
        return [] if environ.get("REQUEST_METHOD") == "HEAD" else [body]


def _selected(family: Metric, wanted: list[str] | None) -> bool:
    """Whether ``?name[]=`` asks for the family (by its name or a sample's, as prometheus_client
    does: ``neat_cycles_total`` selects the counter ``neat_cycles``)."""
    return not wanted or family.name in wanted or any(s.name in wanted for s in family.samples)


def _encode(families: list[Metric], encoder: Encoder) -> _Encoding:
    by_family = {family.name: _encode_family(family, encoder) for family in families}
    body = b"".join(by_family.values())
    # Level 6: 60 % of level 9's time for 1 % more bytes (1000 VMs: 12 ms, 105 KiB).
    compressor = zlib.compressobj(6, zlib.DEFLATED, _GZIP)
    gzip_head = compressor.compress(body) + compressor.flush(zlib.Z_SYNC_FLUSH)
    return _Encoding(by_family, body, gzip_head, compressor)


def _encode_family(family: Metric, encoder: Encoder) -> bytes:
    """One family as ``encoder`` writes it. Plain gauges (the per-VM bulk) take a shortcut 4
    times faster: their sample lines are the same in both formats, so the encoder writes only
    the header lines. tests/test_exposition.py holds the shortcut to the encoders' output."""
    if not _is_plain_gauge(family):
        return encoder(_Families([family])).removesuffix(_OPENMETRICS_END)
    header = Metric(family.name, family.documentation, family.type, family.unit)
    lines = [encoder(_Families([header])).removesuffix(_OPENMETRICS_END).decode()]
    for sample in family.samples:
        value = floatToGoString(sample.value)
        if sample.labels:
            labels = ",".join(f'{k}="{_escape(v)}"' for k, v in sorted(sample.labels.items()))
            lines.append(f"{sample.name}{{{labels}}} {value}\n")
        else:
            lines.append(f"{sample.name} {value}\n")
    return "".join(lines).encode()


def _is_plain_gauge(family: Metric) -> bool:
    samples = family.samples
    # Each distinct name checked once: the samples of a family share their names.
    names = {sample.name for sample in samples}
    label_names = set().union(*(sample.labels for sample in samples))
    return (
        family.type == "gauge"
        and all(_LEGACY_NAME.fullmatch(name) for name in names)
        and all(_LEGACY_LABEL.fullmatch(name) for name in label_names)
        and all(
            sample.timestamp is None and sample.exemplar is None and sample.native_histogram is None
            for sample in samples
        )
    )


def _escape(value: str) -> str:
    if "\\" in value or "\n" in value or '"' in value:
        return value.replace("\\", r"\\").replace("\n", r"\n").replace('"', r"\"")
    return value
