"""``/metrics`` with the snapshot's series encoded by the cycle that built it, not by scrapes.

prometheus_client's encoders do pure-Python work per sample while holding the GIL: a thousand
VMs' series (four per VM) take tens of milliseconds per format, and many times that when
concurrent scrapes compete for the GIL, so scrapers would queue behind each other. Those series
change only when a cycle publishes a new snapshot, so :meth:`Exposition.publish` encodes them
there (plain and gzip-compressed), before swapping them in. Each scrape encodes only the rest,
the few dozen samples of the loop's and the global manager client's counters, which are
therefore always current, and appends it: to the kept text, and to the kept gzip stream by
continuing a copy of its compressor, which yields one ordinary gzip stream. The two parts are
kept apart: the snapshot's families are not in the registry of live metrics, so encoding that
registry never builds them, and no family is shown twice.

The per-VM bulk comes as :class:`GaugeRows` rather than prometheus_client families: label sets
and values, no Metric objects. Its label text changes only when a VM comes or goes (or its Nova
metadata changes), so it is kept from one publish to the next and only the values are formatted
each cycle; the sample lines are the same in both formats (legacy names, no timestamps, no
exemplars), so they are made once for all of them and only the header lines are the encoders'.
The other families (a few dozen samples) go through the encoders themselves. tests/
test_exposition.py holds the result to the encoders' output, byte for byte.

Only the formats scrapers have asked for are encoded (Prometheus asks for one: OpenMetrics,
gzip). The first scrape in a new format encodes it for the current snapshot (concurrent ones
wait for that one encoding); from the next cycle on, the cycle encodes it too.
"""

from __future__ import annotations

import re
import threading
import zlib
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from urllib.parse import parse_qs

from prometheus_client import CollectorRegistry
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.exposition import choose_encoder, gzip_accepted
from prometheus_client.metrics_core import Metric
from prometheus_client.registry import Collector
from prometheus_client.utils import floatToGoString

from neat_exporter.errors import InputError
from neat_exporter.identifiers import shown

_OPENMETRICS_END = b"# EOF\n"
_LEGACY_NAME = re.compile(r"[a-zA-Z_:][a-zA-Z0-9_:]*")
_LEGACY_LABEL = re.compile(r"(?!__)[a-zA-Z_][a-zA-Z0-9_]*")  # "__" is reserved
_GZIP = 16 + zlib.MAX_WBITS  # zlib's window bits for a gzip header and trailer
# Level 1, not zlib's default 6 (prometheus_client's): the body is repetitive text, which level 1
# compresses in less than half the time for a few more bytes (README, Benchmarks: Exporter).
# The cycle's time is what is budgeted; a few KiB more per scrape are not.
_GZIP_LEVEL = 1

Encoder = Callable[[Collector], bytes]
Labels = tuple[str, ...]


@dataclass(frozen=True)
class GaugeRows:
    """A gauge family as rows of label values and a value: the shape of the per-VM bulk, which
    :class:`Exposition` encodes without building prometheus_client samples."""

    name: str
    documentation: str
    label_names: Labels
    rows: Sequence[tuple[Labels, float]]

    def __post_init__(self):
        # Names the encoders would quote or rewrite would make the fast path wrong.
        if not _LEGACY_NAME.fullmatch(self.name):
            raise ValueError(f"not a legacy metric name: {self.name!r}")
        for label in self.label_names:
            if not _LEGACY_LABEL.fullmatch(label):
                raise ValueError(f"not a legacy label name: {label!r}")

    def metric(self) -> GaugeMetricFamily:
        family = GaugeMetricFamily(self.name, self.documentation, labels=self.label_names)
        for labels, value in self.rows:
            family.add_metric(labels, value)
        return family


Family = Metric | GaugeRows


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
    families: list[Family]
    sample_lines: dict[str, str]  # GaugeRows name -> its sample lines, the same in every format
    encodings: dict[str, _Encoding]  # by content type; a scrape may add one (under the lock)


class Exposition(Collector):
    """The families of the latest snapshot, encoded for :class:`MetricsApp`, and as a collector
    for other readers (a registry of their own, to read values or encode them).

    The cycle calls :meth:`publish`; scrapes read what it published and never see families
    whose encoding is still being made."""

    def __init__(self, families: list[Family]):
        self._encoders: dict[str, Encoder] = {}  # by content type: the formats asked for
        self._lock = threading.Lock()
        # The text of the rows' label sets and values in the latest publish, for the next one:
        # label sets change only when VMs come and go, many values (memory, 0, 1) rarely.
        self._label_text: dict[tuple[Labels, Labels], str] = {}
        self._value_text: dict[float | str, str] = {}
        self._published = self._prepare(families, {})

    def describe(self) -> list:
        return []  # nothing to check names against; the families change every cycle

    def collect(self) -> Iterator[Metric]:
        return (f.metric() if isinstance(f, GaugeRows) else f for f in self._published.families)

    def publish(self, families: list[Family]) -> None:
        """Encode ``families`` in every format asked for so far, then show them. InputError,
        the previous families still shown, when a label cannot be encoded."""
        with self._lock:
            encoders = dict(self._encoders)
        self._published = self._prepare(families, encoders)  # one reference swap

    def encoding(self, content_type: str, encoder: Encoder) -> tuple[list[Family], _Encoding]:
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
                    kept = published.encodings[content_type] = _encode(published, encoder)
        return published.families, kept

    def has_encoding(self, content_type: str) -> bool:
        """Whether the published families are encoded in ``content_type`` already."""
        return content_type in self._published.encodings

    def _prepare(self, families: list[Family], encoders: dict[str, Encoder]) -> _Published:
        """``families`` with their sample lines and their encodings by ``encoders``. The label
        text of the rows is reused from the previous call; what this call did not use is
        dropped (VMs gone)."""
        previous_labels, label_text = self._label_text, {}
        previous_values, value_text = self._value_text, {}
        sample_lines = {}
        for family in families:
            if isinstance(family, GaugeRows):
                lines = []
                names = family.label_names
                for values, value in family.rows:
                    key = (names, values)
                    labels = label_text.get(key) or previous_labels.get(key)
                    if labels is None:
                        labels = _label_text(names, values)
                        _check_encodable(labels, family.name)
                    label_text[key] = labels
                    # 0.0 and -0.0 are one key but two texts: zeros go by their repr instead.
                    key = value or repr(value)
                    number = value_text.get(key) or previous_values.get(key)
                    if number is None:
                        number = floatToGoString(value)
                    value_text[key] = number
                    lines.append(f"{family.name}{labels} {number}\n")
                sample_lines[family.name] = "".join(lines)
            else:
                for sample in family.samples:
                    for text in sample.labels.values():
                        _check_encodable(text, family.name)
        self._label_text, self._value_text = label_text, value_text
        published = _Published(families, sample_lines, {})
        for content_type, encoder in encoders.items():
            published.encodings[content_type] = _encode(published, encoder)
        return published


@dataclass(frozen=True)
class _Answer:
    """A scrape's body and what it was made of, for the next scrape in its format."""

    kept: _Encoding
    live: bytes
    body: bytes


class MetricsApp:
    """A WSGI app for ``/metrics``: the families of ``exposition`` from their kept encodings,
    followed by everything in ``registry``, the live metrics, encoded at each scrape. The two
    hold different families: ``exposition`` is not registered in ``registry``.

    The live part (the loop's and the global manager client's ~100 samples, the process's) is
    collected at every scrape, so it is always current, but most of its families change with
    cycles and migration requests, not with scrapes: each family's encoding is kept with the
    samples it showed and made again only when they differ, and a scrape whose live part and
    snapshot are those of the previous one in its format is answered with the previous body.
    That saves the encoder's per-sample Python work (most of a scrape's cost) and a copy of the
    body, which is what lets back-to-back scrapers be served in time."""

    def __init__(self, registry: CollectorRegistry, exposition: Exposition):
        self._registry = registry
        self._exposition = exposition
        self._answers: dict[tuple[str, bool], _Answer] = {}  # by (content type, gzip)
        # by (content type, family name): the family as last collected and its encoding
        self._live: dict[tuple[str, str], tuple[Metric, bytes]] = {}

    def __call__(self, environ: dict, start_response: Callable) -> Iterable[bytes]:
        encoder, content_type = choose_encoder(environ.get("HTTP_ACCEPT", ""))
        families, kept = self._exposition.encoding(content_type, encoder)
        wanted = parse_qs(environ.get("QUERY_STRING", "")).get("name[]")
        rest = [f for f in self._registry.collect() if _selected(f, wanted)]
        headers = [("Content-Type", content_type)]
        gzipped = gzip_accepted(environ.get("HTTP_ACCEPT_ENCODING", ""))
        if wanted:  # prometheus_client's ?name[]= filter, from the kept encodings too
            body = b"".join(kept.by_family[f.name] for f in families if _selected(f, wanted))
            body += encoder(_Families(rest))
            body = zlib.compress(body, _GZIP_LEVEL, wbits=_GZIP) if gzipped else body
        else:
            body = self._body(content_type, encoder, kept, rest, gzipped)
        if gzipped:
            headers.append(("Content-Encoding", "gzip"))
        headers.append(("Content-Length", str(len(body))))
        start_response("200 OK", headers)
        return [] if environ.get("REQUEST_METHOD") == "HEAD" else [body]

    def answers_at_once(self, environ: dict) -> bool:
        """Whether a scrape answers from kept encodings, without encoding the snapshot (the
        first scrape in a format) or compressing a filtered body."""
        _, content_type = choose_encoder(environ.get("HTTP_ACCEPT", ""))
        filtered = "name[]" in parse_qs(environ.get("QUERY_STRING", ""))
        return not filtered and self._exposition.has_encoding(content_type)

    def _body(
        self,
        content_type: str,
        encoder: Encoder,
        kept: _Encoding,
        rest: list[Metric],
        gzipped: bool,
    ) -> bytes:
        """The whole body: the previous one in this format if nothing it shows has changed."""
        live = self._live_encoding(content_type, encoder, rest)
        previous = self._answers.get((content_type, gzipped))
        if previous is not None and previous.kept is kept and previous.live == live:
            return previous.body
        if gzipped:
            compressor = kept.compressor.copy()
            body = kept.gzip_head + compressor.compress(live) + compressor.flush()
        else:
            body = kept.body + live
        # One reference swap: concurrent scrapes read a whole answer, old or new.
        self._answers[content_type, gzipped] = _Answer(kept, live, body)
        return body

    def _live_encoding(self, content_type: str, encoder: Encoder, rest: list[Metric]) -> bytes:
        """``rest`` encoded, each family again only if its samples differ from the last ones
        seen (they compare by value: a value going from 0.0 to -0.0 keeps showing 0.0)."""
        parts = []
        for family in rest:
            key = (content_type, family.name)
            known = self._live.get(key)
            if known is None or known[0] != family:
                encoded = encoder(_Families([family])).removesuffix(_OPENMETRICS_END)
                self._live[key] = known = (family, encoded)
            parts.append(known[1])
        return b"".join(parts) + encoder(_Families([]))  # the format's end, if it has one


def _selected(family: Family, wanted: list[str] | None) -> bool:
    """Whether ``?name[]=`` asks for the family (by its name or a sample's, as prometheus_client
    does: ``neat_cycles_total`` selects the counter ``neat_cycles``)."""
    if not wanted or family.name in wanted:
        return True
    return isinstance(family, Metric) and any(s.name in wanted for s in family.samples)


def _encode(published: _Published, encoder: Encoder) -> _Encoding:
    by_family = {}
    for family in published.families:
        if isinstance(family, GaugeRows):
            header = Metric(family.name, family.documentation, "gauge")
            lines = published.sample_lines[family.name].encode()
        else:
            header, lines = family, b""
        by_family[family.name] = encoder(_Families([header])).removesuffix(_OPENMETRICS_END) + lines
    body = b"".join(by_family.values())
    compressor = zlib.compressobj(_GZIP_LEVEL, zlib.DEFLATED, _GZIP)
    gzip_head = compressor.compress(body) + compressor.flush(zlib.Z_SYNC_FLUSH)
    return _Encoding(by_family, body, gzip_head, compressor)


def _check_encodable(text: str, family: str) -> None:
    """InputError unless ``text`` can be encoded: a lone surrogate (a file name that is not
    UTF-8, say) would make every scrape fail, so the snapshot carrying it is not shown."""
    if not text.isascii():
        try:
            text.encode()
        except UnicodeEncodeError:
            raise InputError(f"{family}: a label is not valid Unicode: {shown(text)}") from None


def _label_text(names: Labels, values: Labels) -> str:
    """``{name="value",...}`` as the encoders write it (sorted by name), or "" for no labels."""
    if not names:
        return ""
    pairs = sorted(zip(names, values, strict=True))
    return "{" + ",".join(f'{name}="{_escape(value)}"' for name, value in pairs) + "}"


def _escape(value: str) -> str:
    if "\\" in value or "\n" in value or '"' in value:
        return value.replace("\\", r"\\").replace("\n", r"\n").replace('"', r"\"")
    return value
