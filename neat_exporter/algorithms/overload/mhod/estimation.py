"""MHOD's multisize sliding-window estimation of the transition probabilities, incremental.

Neat replays the whole utilization history on every call. The replay treats the first value
as a transition from state 0 and then, for every transition i -> j:

* appends j to the request window of row i (the newest states that followed state i);
* for every state k and window size w appends ``count(k in the newest w of that window) / w``
  to the estimate window E[i][k][w] (keeping its newest w estimates);
* sets the variance V[i][k][w] to 1.0 while E[i][k][w] holds fewer than w estimates, else to
  the sample variance of those w estimates, and the acceptable variance A[i][k][w] to
  p(1 − p)/w with p the newest estimate.

Then for every (i, k) the largest window size, walking ``window_sizes`` in order until the first
w with V > A, is selected (``window_sizes[0]`` if the first fails) and p[i][k] is its newest
estimate (0.0 for a row never visited).

Everything row i ends up with is a function of T_i, the time-ordered sequence of states that
followed state i in the history (with the virtual leading 0 -> s_0 transition in row 0), and
only of its newest 2·max(w) − 1 entries. So this estimator keeps T_i for the history it last saw,
edits it when the new history is the old one with values appended and/or the oldest values
dropped (the exporter's growing or sliding history), and recomputes only the rows whose tail
changed. Any other history is rebuilt from scratch. The arithmetic reproduces Neat's: counts
divided by w, sums left to right, variance divisor w − 1.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Sequence
from itertools import islice

import numpy as np


class MultisizeEstimator:
    """Transition probabilities of the last history given to :meth:`update`."""

    def __init__(self, window_sizes: Sequence[int], number_of_states: int):
        self.window_sizes = tuple(window_sizes)
        self.number_of_states = number_of_states
        self.span = 2 * max(self.window_sizes) - 1
        self._states = np.empty(0, dtype=np.intp)
        self._rows: list[deque[int]] = [deque() for _ in range(number_of_states)]
        self._cache: list[tuple[list[float], list[int]] | None] = [None] * number_of_states

    # -- keeping T_i in step with the history --------------------------------------------

    def update(self, states: np.ndarray) -> None:
        """Make the estimates those of the state sequence ``states`` (oldest first)."""
        old, new = self._states, states
        for appended in (1, 0, *range(2, 9)):
            dropped = len(old) + appended - len(new)
            kept = len(new) - appended
            if 0 <= dropped < len(old) and kept > 0 and np.array_equal(new[:kept], old[dropped:]):
                self._drop_oldest(dropped)
                self._append(new, kept)
                self._states = new
                return
        self._rebuild(new)

    def _rebuild(self, states: np.ndarray) -> None:
        self._rows = [deque() for _ in range(self.number_of_states)]
        self._cache = [None] * self.number_of_states
        self._states = np.empty(0, dtype=np.intp)
        self._append(states, 0)
        self._states = states

    def _row_length(self, i: int) -> int:
        """len(T_i): row 0 also holds the virtual first transition."""
        return len(self._rows[i]) + (1 if i == 0 and len(self._states) else 0)

    def _drop_oldest(self, count: int) -> None:
        old = self._states
        for index in range(count):
            first = int(old[index])
            if index + 1 < len(old):
                # The oldest real transition is first -> old[index + 1], the oldest of row first.
                self._rows[first].popleft()
            for row in {first, 0}:
                if self._row_length(row) <= self.span + 1:
                    self._cache[row] = None

    def _append(self, new: np.ndarray, start: int) -> None:
        if start == len(new):
            return
        values = new[start:].tolist()
        previous = int(new[start - 1]) if start else None
        if previous is None:
            self._cache[0] = None  # the virtual 0 -> s_0 transition
        for value in values:
            if previous is not None:
                self._rows[previous].append(value)
                self._cache[previous] = None
            previous = value

    # -- estimates -----------------------------------------------------------------------

    def _sequence(self, i: int) -> tuple[np.ndarray, int]:
        """The newest ``span`` entries of T_i and len(T_i)."""
        row = self._rows[i]
        length = self._row_length(i)
        skip = max(0, length - self.span)
        if i == 0 and len(self._states):
            head = [int(self._states[0])] if skip == 0 else []
            tail = list(islice(row, max(0, skip - 1), None))
            return np.array(head + tail, dtype=np.intp), length
        return np.fromiter(islice(row, skip, None), dtype=np.intp), length

    def _estimate_row(self, i: int) -> tuple[list[float], list[int]]:
        sizes = self.window_sizes
        n = self.number_of_states
        tail, length = self._sequence(i)
        if length == 0:
            # Never visited: V = A = 1.0 for every size, so every size passes; no estimates.
            return [0.0] * n, [sizes[-1]] * n
        # counts[k][t] = occurrences of state k in tail[:t]
        counts = np.zeros((n, len(tail) + 1), dtype=np.int64)
        counts[:, 1:] = np.cumsum(tail[None, :] == np.arange(n)[:, None], axis=1)
        end = len(tail)
        probabilities, selected = [], []
        for k in range(n):
            chosen = sizes[0]
            for w in sizes:
                if not self._acceptable(counts[k], end, length, w):
                    break
                chosen = w
            probabilities.append(float((counts[k, end] - counts[k, max(0, end - chosen)]) / chosen))
            selected.append(chosen)
        return probabilities, selected

    @staticmethod
    def _acceptable(counts: np.ndarray, end: int, length: int, w: int) -> bool:
        """V <= A for one (row, state, window size)."""
        newest = (counts[end] - counts[max(0, end - w)]) / w
        acceptable = newest * (1 - newest) / w
        if length < w:
            return not acceptable < 1.0
        # The w newest estimates end at positions end - w + 1 .. end of the tail.
        positions = np.arange(end - w + 1, end + 1)
        estimates = (counts[positions] - counts[np.maximum(positions - w, 0)]) / w
        mean = np.cumsum(estimates)[-1] / w
        deviations = estimates - mean
        variance = np.cumsum(deviations * deviations)[-1] / (w - 1)
        return not variance > acceptable

    def probabilities(self) -> list[list[float]]:
        """p[i][k], the selected estimate of the probability of moving from state i to k."""
        return [self._row(i)[0] for i in range(self.number_of_states)]

    def selected_windows(self) -> list[list[int]]:
        return [self._row(i)[1] for i in range(self.number_of_states)]

    def _row(self, i: int) -> tuple[list[float], list[int]]:
        cached = self._cache[i]
        if cached is None:
            cached = self._cache[i] = self._estimate_row(i)
        return cached
