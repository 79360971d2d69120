"""``/metrics`` with the snapshot's series encoded once per snapshot, not at every scrape.

prometheus_client's encoders do pure-Python work per sample while holding the GIL: a thousand
VMs' series (four per VM) take 60 ms in the text format and 90 ms in OpenMetrics on an idle core,
and many times that when concurrent scrapes compete for the GIL, so scrapers would queue behind
each other. Those series change only when a cycle swaps in a new snapshot, so their encoding
(plain and gzip-compressed) is kept per snapshot and format. Each scrape encodes only the rest,
the few dozen samples of the loop's and the global manager client's counters, which are
therefore always current, and appends it: to the kept text, and to the kept gzip stream by
continuing a copy of its compressor, which yields one ordinary gzip stream.

The first scrape that sees a new snapshot encodes it (about 45 ms at 1000 VMs, gzip included,
once per cycle); scrapes arriving during that encoding get the previous snapshot's, as if they
had come a moment earlier, rather than queueing behind it. Only the very first encoding is
waited for.
"""

from __future__ import annotations

import re
import threading
import zlib
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from urllib.parse import parse_qs

from prometheus_client import CollectorRegistry
from prometheus_client.exposition import choose_encoder, gzip_accepted
from prometheus_client.metrics_core import Metric
from prometheus_client.utils import floatToGoString

_OPENMETRICS_END = b"# EOF\n"
_LEGACY_NAME = re.compile(r"[a-zA-Z_:][a-zA-Z0-9_:]*")
_LEGACY_LABEL = re.compile(r"[a-zA-Z_][a-zA-Z0-9_]*")
_GZIP = 16 + zlib.MAX_WBITS  # zlib's window bits for a gzip header and trailer


class _Families:
    """A fixed list of families in the shape encoders take (anything with ``collect()``)."""

    def __init__(self, families: Iterable[Metric]):
        self._families = list(families)

    def collect(self) -> list[Metric]:
        return self._families


@dataclass(frozen=True)
class _EncodedSnapshot:
    families: list[Metric]  # what was encoded; compared by identity
    by_family: dict[str, bytes]  # family name -> its lines, for ?name[]= filtered scrapes
    body: bytes  # all of them, without OpenMetrics' closing "# EOF"
    gzip_head: bytes  # body compressed, flushed to a byte boundary, stream left open
    compressor: zlib._Compress  # the stream's state after gzip_head, copied for each scrape


class CachedMetricsApp:
    """A WSGI app for ``/metrics``: everything in ``registry``, with the families that
    ``snapshot_families()`` returns encoded once per returned list (a new list = a new
    snapshot). Those families may be in ``registry`` too; they are shown once."""

    def __init__(self, registry: CollectorRegistry, snapshot_families: Callable[[], list[Metric]]):
        self._registry = registry
        self._snapshot_families = snapshot_families
        self._encoded: dict[str, _EncodedSnapshot] = {}
        self._lock = threading.Lock()

    def __call__(self, environ: dict, start_response: Callable) -> Iterable[bytes]:
        encoder, content_type = choose_encoder(environ.get("HTTP_ACCEPT", ""))
        snapshot = self.encoded_snapshot(content_type, encoder)
        wanted = parse_qs(environ.get("QUERY_STRING", "")).get("name[]")
        rest = encoder(
            _Families(
                family
                for family in self._registry.collect()
                if family.name not in snapshot.by_family and _selected(family, wanted)
            )
        )
        headers = [("Content-Type", content_type)]
        gzipped = gzip_accepted(environ.get("HTTP_ACCEPT_ENCODING", ""))
        if wanted:  # prometheus_client's ?name[]= filter, from the kept encodings too
            kept = [snapshot.by_family[f.name] for f in snapshot.families if _selected(f, wanted)]
            body = b"".join(kept) + rest
            body = zlib.compress(body, 6, wbits=_GZIP) if gzipped else body
        elif gzipped:
            compressor = snapshot.compressor.copy()
            body = snapshot.gzip_head + compressor.compress(rest) + compressor.flush()
        else:
            body = snapshot.body + rest
        if gzipped:
            headers.append(("Content-Encoding", "gzip"))
        headers.append(("Content-Length", str(len(body))))
        start_response("200 OK", headers)
        return [] if environ.get("REQUEST_METHOD") == "HEAD" else [body]

    def encoded_snapshot(self, content_type: str, encoder: Callable) -> _EncodedSnapshot:
        families = self._snapshot_families()
        encoded = self._encoded.get(content_type)
        if encoded is not None and encoded.families is families:
            return encoded
        # The first scrape to see a new snapshot encodes it. Scrapes arriving meanwhile get the
        # previous snapshot's encoding rather than queueing (they wait only for the very first).
        if not self._lock.acquire(blocking=encoded is None):
            return encoded
        try:
            encoded = self._encoded.get(content_type)
            if encoded is None or encoded.families is not families:
                encoded = self._encoded[content_type] = _encode(families, encoder)
            return encoded
        finally:
            self._lock.release()


def _selected(family: Metric, wanted: list[str] | None) -> bool:
    """Whether ``?name[]=`` asks for the family (by its name or a sample's, as prometheus_client
    does: ``neat_cycles_total`` selects the counter ``neat_cycles``)."""
    return not wanted or family.name in wanted or any(s.name in wanted for s in family.samples)


def _encode(families: list[Metric], encoder: Callable) -> _EncodedSnapshot:
    by_family = {family.name: _encode_family(family, encoder) for family in families}
    body = b"".join(by_family.values())
    # Level 6: 60 % of level 9's time for 1 % more bytes (1000 VMs: 36 ms, 105 KiB).
    compressor = zlib.compressobj(6, zlib.DEFLATED, _GZIP)
    gzip_head = compressor.compress(body) + compressor.flush(zlib.Z_SYNC_FLUSH)
    return _EncodedSnapshot(families, by_family, body, gzip_head, compressor)


def _encode_family(family: Metric, encoder: Callable) -> bytes:
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
    return family.type == "gauge" and all(
        _LEGACY_NAME.fullmatch(sample.name)
        and sample.timestamp is None
        and sample.exemplar is None
        and sample.native_histogram is None
        and all(_LEGACY_LABEL.fullmatch(name) for name in sample.labels)
        for sample in family.samples
    )


def _escape(value: str) -> str:
    return value.replace("\\", r"\\").replace("\n", r"\n").replace('"', r"\"")
