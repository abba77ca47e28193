"""Clock-skew estimation per source and signal (DESIGN §5): corrected time = raw time + offset.

One estimator serves one plugin key (``tenant_id/plugin_id``); the caller keeps ``key -> estimator``,
so each key's evidence and snapshot move with its partition.

Evidence, all turned into votes ``[lo, hi]`` on the offset of one (source, signal):
- traces: a child span on another source must nest in its parent, whose times are first corrected
  onto the reference. Nesting gives ``[p_start - c_start, p_end - c_end]``; a child that outlived its
  parent (async, or the parent timed out) only gives ``[p_start - c_start, +inf)``. This is Jaeger's
  clock-skew adjuster turned into intervals: Jaeger picks 0 when 0 is inside, else the interval's
  centre (half the latency difference), else the aligned starts. Root spans define the timeline.
- logs: a log carrying ``span_id`` lies inside its span, so its offset is in
  ``[span_start - ts, span_end - ts]`` with the span's times corrected by its source's trace offset.
- broker: ``raw + offset <= broker_ts + tolerance``, an upper bound, from every signal.

The offset is the point stabbed by the most vote weight (outliers such as logs written long after
their span ended fall outside the winning region instead of dragging a mean). Weights decay with the
vote's age on the controllable clock and with the number of newer votes, so a stepped or drifting
clock takes over once its new evidence outweighs the old.
"""

from __future__ import annotations

import math
import sys
from array import array
from bisect import bisect_left, insort
from collections import OrderedDict, deque
from dataclasses import dataclass
from typing import Any, Callable

import orjson

SIGNALS = ("logs", "traces", "metrics")
_SIGNAL_SET = frozenset(SIGNALS)
_FAR = 2**62
SNAPSHOT_VERSION = 1

# A signal without link evidence of its own borrows the same source's clock from another signal.
_BORROW = {"traces": ("logs",), "logs": ("traces",), "metrics": ("traces", "logs")}


@dataclass(frozen=True, slots=True)
class Estimate:
    offset_ms: int
    confidence: float
    samples: int
    basis: str = "none"  # linked | root | borrowed:<signal> | broker | none


NO_EVIDENCE = Estimate(0, 0.0, 0, "none")


def source_of(record: dict) -> str:
    """The clock a record was stamped by: instance_id, else host, else "unknown"."""
    return str(record.get("instance_id") or record.get("host") or "unknown")


def _int(value: Any) -> int | None:
    if type(value) is int:  # the common case, first: this runs for every record
        return value
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value != value:
        return None
    return int(value)


@dataclass(slots=True)
class _Fit:
    offset: int | None  # None: no votes
    ratio: float  # vote weight at the offset / all vote weight
    mass: float  # time-decayed count of supporting votes, as of ``at``
    at: int  # the newest vote's time
    fitted_at: int


class _Track:
    """Evidence for one (source, signal)."""

    __slots__ = ("votes", "pending", "slacks", "slack_times", "sorted_slacks", "roots", "fit")

    def __init__(self):
        self.votes: deque[tuple[int, float, int]] = deque()  # (lo, hi, observed_at)
        self.pending = 0  # votes since the last fit
        # Broker samples in machine-integer columns: a busy worker adds one per record to a cold
        # estimator, and three small arrays are fewer cache misses than a deque of tuples of ints.
        self.slacks = array("q")  # broker - raw, arrival order
        self.slack_times = array("q")  # when each was observed
        self.sorted_slacks = array("q")  # the same values, sorted, for the quantile
        self.roots = 0
        self.fit: _Fit | None = None

    @property
    def samples(self) -> int:
        return len(self.votes) + len(self.slacks) + self.roots

    def add_vote(self, lo: int, hi: float, at: int, cap: int) -> None:
        if len(self.votes) >= cap:
            self.votes.popleft()
        self.votes.append((lo, hi, at))
        self.pending += 1

    def add_slack(self, slack: int, at: int, cap: int, quantile: float = 0.0) -> bool:
        """Add one broker sample; True when the ``quantile`` of the samples (the bound) moved.
        A sample beyond ±2**62 ms (no clock is that far off) is ignored."""
        if not (-_FAR < slack < _FAR and -_FAR < at < _FAR):
            return False
        before = self.slack_at(quantile)
        if len(self.slacks) >= cap:
            self.drop_slack()
        self.slacks.append(slack)
        self.slack_times.append(at)
        insort(self.sorted_slacks, slack)
        return self.slack_at(quantile) != before

    def slack_at(self, quantile: float) -> int | None:
        """The ``quantile`` of the broker samples (None without any)."""
        ordered = self.sorted_slacks
        return ordered[min(len(ordered) - 1, int(quantile * len(ordered)))] if ordered else None

    def drop_slack(self) -> None:
        """Forget the oldest broker sample."""
        slack = self.slacks.pop(0)
        del self.slack_times[0]
        del self.sorted_slacks[bisect_left(self.sorted_slacks, slack)]


class SkewEstimator:
    def __init__(
        self,
        clock: Callable[[], int],
        *,
        max_votes: int = 64,
        max_slacks: int | None = None,
        count_decay: float = 0.97,
        half_life_ms: int = 300_000,
        max_age_ms: int = 1_800_000,
        broker_tolerance_ms: int = 100,
        broker_quantile: float = 0.1,
        confidence_scale: float = 8.0,
        max_sources: int = 64,
        max_spans: int = 4096,
        max_waiting: int = 1024,
        index_ttl_ms: int = 120_000,
        refresh_ms: int = 1_000,
    ):
        if not 0 < count_decay <= 1:
            raise ValueError(f"count_decay must be in (0, 1], got {count_decay}")
        if half_life_ms <= 0 or max_votes <= 0 or max_sources <= 0:
            raise ValueError("half_life_ms, max_votes and max_sources must be positive")
        self._clock = clock
        self._max_votes = max_votes
        # Broker-bound samples kept per (source, signal); the bound is a low quantile of them.
        self._max_slacks = max_slacks or max_votes
        self._count_decay = count_decay
        self._tau = half_life_ms / math.log(2)
        self._max_age = max_age_ms
        self._tolerance = broker_tolerance_ms
        self._quantile = broker_quantile
        self._scale = confidence_scale
        self._max_sources = max_sources
        self._max_spans = max_spans
        self._max_waiting = max_waiting
        self._ttl = index_ttl_ms
        self._refresh = refresh_ms
        self._sources: OrderedDict[str, dict[str, _Track]] = OrderedDict()
        # span_id -> (source, start, end, observed_at); logs and children waiting for a span by span_id,
        # as (first_seen, *item, *item, ...): (source, ts) per log, (span_id,) per child. All flat
        # tuples of strs and ints: the garbage collector stops tracking them, which matters with
        # thousands of estimators holding hundreds of entries each. Plain dicts, oldest first (an
        # OrderedDict's links cost ~50 B more an entry: 15 MiB for 5,000 plugins' full wait lists).
        self._spans: dict[str, tuple[str, int, int, int]] = {}
        self._waiting_logs: dict[str, tuple[Any, ...]] = {}
        self._waiting_children: dict[str, tuple[Any, ...]] = {}
        self._expired_at = -(2**62)
        # The indexes are swept at most this often (observe checks before calling): with thousands
        # of plugins each estimator sees a record every second or so, and a sweep on every one cost
        # more than the votes. An index entry lives at most a sixteenth past ``index_ttl_ms``.
        self._expire_every = max(100, index_ttl_ms // 16)
        # Counts evidence that can move an estimate (a vote, a root span, a new broker bound); what
        # did not change it needs no re-check of the offsets entries were placed with.
        self.changes = 0
        # The part of ``changes`` that can move the estimate of a (source, signal) other than the
        # observed record's own: votes (read by the signals that borrow) and root spans. A new
        # broker bound only moves its own (source, signal), whose record the caller corrects next.
        self.links = 0

    # -- evidence ----------------------------------------------------------------------------------

    def observe(self, signal: str, record: dict, now: int | None = None) -> str:
        """Learn from one record: spans and span-linked logs give votes, any broker_ts a bound.
        Returns the record's source. ``now``: the clock's reading, when the caller has it."""
        _check(signal)
        if now is None:
            now = self._clock()
        # One string per source, not one per record: the wait lists and the span index hold it
        # in every entry (~60 B each otherwise; 18 MiB for 5,000 plugins' full wait lists).
        source = sys.intern(source_of(record))
        own = _int(record.get("end_ts" if signal == "traces" else "ts"))
        broker = _int(record.get("broker_ts"))
        if own is not None and broker is not None:
            if self._track(source, signal).add_slack(broker - own, now, self._max_slacks, self._quantile):
                self.changes += 1
        if signal == "metrics":
            return source
        if now - self._expired_at >= self._expire_every:
            self._expire_indexes(now)
        span_id = record.get("span_id")
        if not span_id:
            return source
        if signal == "traces":
            self._observe_span(str(span_id), source, record, now)
        else:
            self._observe_log(str(span_id), source, record, now)
        return source

    def _observe_span(self, span_id: str, source: str, record: dict, now: int) -> None:
        start, end = _int(record.get("start_ts")), _int(record.get("end_ts"))
        if start is None or end is None or end < start or span_id in self._spans:
            return  # unusable or redelivered
        span = (source, start, end, now)
        _put(self._spans, span_id, span, self._max_spans)
        parent_id = record.get("parent_span_id")
        if not parent_id:
            track = self._track(source, "traces")
            track.roots = min(track.roots + 1, self._max_votes)
            self.changes += 1
            self.links += 1
        elif (parent := self._spans.get(str(parent_id))) is not None:
            self._link_child(span, parent, now)
        else:
            self._wait(self._waiting_children, str(parent_id), (span_id,), now)
        if (logs := self._waiting_logs.pop(span_id, None)) is not None:
            for log_source, ts in zip(logs[1::2], logs[2::2]):
                self._link_log(log_source, ts, span, now)
        if (children := self._waiting_children.pop(span_id, None)) is not None:
            for child_id in children[1:]:
                if (child := self._spans.get(child_id)) is not None:
                    self._link_child(child, span, now)

    def _observe_log(self, span_id: str, source: str, record: dict, now: int) -> None:
        if (ts := _int(record.get("ts"))) is None:
            return
        if (span := self._spans.get(span_id)) is not None:
            self._link_log(source, ts, span, now)
        else:
            self._wait(self._waiting_logs, span_id, (source, ts), now)

    def _link_log(self, source: str, ts: int, span: tuple[str, int, int, int], now: int) -> None:
        span_source, start, end, _ = span
        shift = self.offset(span_source, "traces", now)
        self._vote(source, "logs", start + shift - ts, end + shift - ts, now)

    def _link_child(self, child: tuple, parent: tuple, now: int) -> None:
        child_source, c_start, c_end, _ = child
        parent_source, p_start, p_end, _ = parent
        if child_source == parent_source:
            return  # same clock: the child inherits its parent's correction
        shift = self.offset(parent_source, "traces", now)
        lo = p_start + shift - c_start
        if c_end - c_start > p_end - p_start:
            self._vote(child_source, "traces", lo, math.inf, now)
        else:
            self._vote(child_source, "traces", lo, p_end + shift - c_end, now)

    def _vote(self, source: str, signal: str, lo: int, hi: float, now: int) -> None:
        self._track(source, signal).add_vote(lo, hi, now, self._max_votes)
        self.changes += 1
        self.links += 1

    def _wait(self, index: dict, span_id: str, item: tuple, now: int) -> None:
        """Add ``item``'s fields to what waits for ``span_id``: ``(first_seen, *item, *item, ...)``."""
        entry = index.get(span_id)
        if entry is None:
            _put(index, span_id, (now, *item), self._max_waiting)
        elif len(entry) <= 32 * len(item):  # one span's waiting list; more adds little evidence
            index[span_id] = (*entry, *item)

    def _expire_indexes(self, now: int) -> None:
        self._expired_at = now
        cutoff = now - self._ttl
        for index in (self._spans, self._waiting_logs, self._waiting_children):
            seen_at = 3 if index is self._spans else 0
            expired = []
            for key, value in index.items():  # oldest first: stop at the first one still fresh
                if value[seen_at] >= cutoff:
                    break
                expired.append(key)
            for key in expired:
                del index[key]

    def _track(self, source: str, signal: str) -> _Track:
        tracks = self._sources.get(source)
        if tracks is None:
            tracks = self._sources[source] = {}
            if len(self._sources) > self._max_sources:
                self._sources.popitem(last=False)  # the source heard from least recently
        else:
            self._sources.move_to_end(source)
        track = tracks.get(signal)
        if track is None:
            track = tracks[signal] = _Track()
        return track

    # -- estimates ---------------------------------------------------------------------------------

    def estimate(self, source: str, signal: str) -> Estimate:
        _check(signal)
        tracks = self._sources.get(source)
        if tracks is None:
            return NO_EVIDENCE
        now = self._clock()
        offset, basis, fit = self._resolve(tracks, signal, now)
        track = tracks.get(signal)
        if basis == "linked":
            confidence = self._confidence(fit, now)
        elif basis == "root":
            confidence = 1 - math.exp(-track.roots / self._scale)
        elif basis == "broker":
            confidence = (1 - math.exp(-len(track.slacks) / self._scale)) / 2  # one side only
        elif basis.startswith("borrowed"):
            confidence = self._confidence(fit, now) / 2  # another pipeline may stamp another clock
        else:
            confidence = 0.0
        return Estimate(offset, round(confidence, 4), track.samples if track is not None else 0, basis)

    def _resolve(self, tracks: dict[str, _Track], signal: str, now: int) -> tuple[int, str, _Fit | None]:
        """The offset, its basis and the fit it came from: own votes, else roots, else borrowed."""
        track = tracks.get(signal)
        offset, basis, used = 0, "none", None
        if track is not None:
            fit = self._fit(track, now)
            if fit.offset is not None:
                offset, basis, used = fit.offset, "linked", fit
            elif signal == "traces" and track.roots:
                basis = "root"
        if basis == "none":
            for other in _BORROW[signal]:
                lent = tracks.get(other)
                if lent is not None and (fit := self._fit(lent, now)).offset is not None:
                    offset, basis, used = fit.offset, f"borrowed:{other}", fit
                    break
        if track is not None and (bound := self._bound(track)) is not None and offset > bound:
            # The broker saw the record before its corrected time: the source runs ahead by at least this.
            offset, basis = bound, "broker"
        return offset, basis, used

    def offset(self, source: str, signal: str, now: int | None = None) -> int:
        """The offset (ms) records of ``(source, signal)`` are corrected by now; 0 with no evidence.
        ``now``: the clock's reading, when the caller has it."""
        tracks = self._sources.get(source)
        if tracks is None:
            return 0
        return self._resolve(tracks, signal, self._clock() if now is None else now)[0]

    def correct(self, signal: str, record: dict) -> int:
        """Corrected time of the record's own timestamp (``start_ts`` for spans, else ``ts``)."""
        _check(signal)
        raw = _int(record.get("start_ts" if signal == "traces" else "ts"))
        if raw is None:
            field = "start_ts" if signal == "traces" else "ts"
            raise ValueError(f"a {signal} record needs an epoch-ms {field!r} to be corrected")
        return raw + self.offset(source_of(record), signal)

    def _confidence(self, fit: _Fit, now: int) -> float:
        mass = fit.mass * math.exp(min(0, fit.at - now) / self._tau)
        return fit.ratio * (1 - math.exp(-mass / self._scale))

    def _fit(self, track: _Track, now: int) -> _Fit:
        cutoff = now - self._max_age
        while track.slack_times and track.slack_times[0] < cutoff:
            track.drop_slack()
        while track.votes and track.votes[0][2] < cutoff:
            track.votes.popleft()
            track.fit = None
        fit = track.fit
        # Refitting sorts every vote, so on a busy source it waits for an eighth of new votes or a
        # second of clock: the estimate lags a few votes at most, the ingest path stays cheap.
        if fit is None or track.pending > len(track.votes) // 8 or (
            track.pending and now - fit.fitted_at >= self._refresh
        ):
            if track.votes:
                offset, ratio, mass = _stab(track.votes, self._tau, self._count_decay)
                fit = _Fit(offset, ratio, mass, track.votes[-1][2], now)
            else:
                fit = _Fit(None, 0.0, 0.0, now, now)
            track.fit, track.pending = fit, 0
        return fit

    def _bound(self, track: _Track) -> int | None:
        slack = track.slack_at(self._quantile)
        return None if slack is None else slack + self._tolerance

    def table(self) -> list[dict]:
        """One row per (source, signal) with evidence: for reports, the debug view and the gauge."""
        rows = []
        for source, tracks in list(self._sources.items()):
            for signal in SIGNALS:
                if signal in tracks:
                    est = self.estimate(source, signal)
                    rows.append({"source": source, "signal": signal, "offset_ms": est.offset_ms,
                                 "confidence": est.confidence, "samples": est.samples, "basis": est.basis})
        return rows

    # -- persistence -------------------------------------------------------------------------------

    def snapshot(self) -> dict:
        """JSON-safe evidence per (source, signal). The span/log link indexes are not kept: a restart
        loses at most ``index_ttl_ms`` of links still waiting for their other half."""
        return orjson.loads(self.snapshot_json())

    def snapshot_json(self) -> bytes:
        """``snapshot()`` as JSON, built by orjson from the tuples held (an open upper bound, inf, is
        written as null): saving thousands of estimators must not stall the event loop."""
        return orjson.dumps({
            "version": SNAPSHOT_VERSION,
            "sources": {
                source: {
                    signal: {"votes": list(track.votes), "slacks": list(zip(track.slacks, track.slack_times)),
                             "roots": track.roots}
                    for signal, track in tracks.items()
                }
                for source, tracks in self._sources.items()
            },
        })

    @classmethod
    def restore(cls, data: dict, clock: Callable[[], int], **tunables: Any) -> SkewEstimator:
        version = data.get("version")
        if version != SNAPSHOT_VERSION:
            raise ValueError(
                f"skew snapshot version {version!r} is not {SNAPSHOT_VERSION}: discard it, "
                "the estimator relearns from new records"
            )
        est = cls(clock, **tunables)
        for source, tracks in data.get("sources", {}).items():
            for signal, saved in tracks.items():
                _check(signal)
                track = est._track(source, signal)
                for lo, hi, at in saved.get("votes", []):
                    track.add_vote(int(lo), math.inf if hi is None else int(hi), int(at), est._max_votes)
                for slack, at in saved.get("slacks", []):
                    track.add_slack(int(slack), int(at), est._max_slacks)
                track.roots = min(int(saved.get("roots", 0)), est._max_votes)
        return est


def _stab(votes: deque, tau: float, count_decay: float) -> tuple[int, float, float]:
    """The offset stabbed by the most vote weight, that weight's share, and its time-decayed count."""
    n, newest = len(votes), votes[-1][2]
    weights = [count_decay ** (n - 1 - i) * math.exp((at - newest) / tau)
               for i, (_, _, at) in enumerate(votes)]
    events = []
    for (lo, hi, _), weight in zip(votes, weights):
        events.append((lo, 0, weight))  # starts sort before ends at the same point: intervals are closed
        events.append((hi, 1, weight))
    events.sort()
    best, running, best_lo, best_hi, open_region = 0.0, 0.0, 0, math.inf, False
    for point, kind, weight in events:
        if kind == 0:
            running += weight
            if running > best * (1 + 1e-9):
                best, best_lo, open_region = running, point, True
        else:
            if open_region:
                best_hi, open_region = point, False
            running -= weight
    if best_lo <= 0 <= best_hi:
        chosen = 0.0  # like Jaeger: leave a clock alone when it is already consistent
    elif best_hi == math.inf:
        chosen = float(best_lo)  # only "starts after its parent" is known: the smallest such shift
    else:
        chosen = (best_lo + best_hi) / 2
    support = mass = 0.0
    for (lo, hi, at), weight in zip(votes, weights):
        if lo <= chosen <= hi:
            support += weight
            mass += math.exp((at - newest) / tau)
    return round(chosen), support / sum(weights), mass


def _put(index: dict, key: str, value: Any, cap: int) -> None:
    """Add ``key`` last (``index`` keeps insertion order) and drop the oldest beyond ``cap``."""
    index[key] = value
    if len(index) > cap:
        del index[next(iter(index))]


def _check(signal: str) -> None:
    if signal not in _SIGNAL_SET:
        raise ValueError(f"unknown signal {signal!r}: use one of {', '.join(SIGNALS)}")
