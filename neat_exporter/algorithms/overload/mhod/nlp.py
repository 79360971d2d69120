"""MHOD's optimisation problem for two states and its brute-force solver.

For a two-state Markov chain (state 1 = overloaded) with transition matrix P, initial
distribution π and per-state migration probabilities m, ``L_i(m)`` is the expected number of
steps spent in state i before a migration (πᵀ(I − Q)⁻¹ with Q_ij = (1 − m_i)·P_ij). MHOD picks
the m maximising L0 + L1 subject to the OTF constraint

    (T_m + t_N + L1(m)) / (T_m + t + L0(m) + L1(m)) <= otf

over the grid ``frange(0, 1, step)²``, and migrates when no grid point satisfies it.

The L functions are written in the same expanded form, and evaluated in the same order, as
Neat's ``l_2_states`` so that the floats (and therefore every strict comparison of the search)
are the same.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

Matrix = Sequence[Sequence[float]]


def frange(start: float, end: float, step: float) -> Iterator[float]:
    """``start``, ``start + step``, ... while <= ``end``; the step is added (float accumulation),
    so frange(0, 1, 0.2) yields 0.6000000000000001."""
    value = start
    while value <= end:
        yield value
        value += step


def _denominator(p: Matrix, m0: float, m1: float) -> float:
    p00, p01 = p[0][0], p[0][1]
    p10, p11 = p[1][0], p[1][1]
    return (
        p00 * (m1 * (p11 - m0 * p11) - p11 + m0 * (p11 - 1) + 1)
        - m1 * p11
        + p11
        + (m1 * (m0 * p01 - p01) - m0 * p01 + p01) * p10
        - 1
    )


def l0(pi: Sequence[float], p: Matrix, m: Sequence[float]) -> float:
    """Expected steps in state 0 before a migration:
    [π0(1 − b·p11) + π1·b·p10] / Δ with a = 1 − m0, b = 1 − m1."""
    m0, m1 = m[0], m[1]
    p10, p11 = p[1][0], p[1][1]
    numerator = pi[0] * (-1 * m1 * p11 + p11 - 1) + (m1 * pi[1] - pi[1]) * p10
    return numerator / _denominator(p, m0, m1)


def l1(pi: Sequence[float], p: Matrix, m: Sequence[float]) -> float:
    """Expected steps in state 1 (overloaded) before a migration:
    [π1(1 − a·p00) + π0·a·p01] / Δ."""
    m0, m1 = m[0], m[1]
    p00, p01 = p[0][0], p[0][1]
    numerator = -1 * (p00 * (m0 * pi[1] - pi[1]) + pi[1] + pi[0] * (p01 - m0 * p01))
    return numerator / _denominator(p, m0, m1)


def optimize(
    grid: Sequence[float],
    otf: float,
    migration_steps: float,
    p: Matrix,
    pi: Sequence[float],
    time_in_states: int,
    time_in_state_n: int,
) -> list[float]:
    """The grid point [m0, m1] with the largest L0 + L1 (> 0, first found wins ties) that meets
    the OTF constraint; [] when none does (points dividing by zero are skipped)."""
    best = 0.0
    solution: list[float] = []
    for x in grid:
        for y in grid:
            m = (x, y)
            try:
                a, b = l0(pi, p, m), l1(pi, p, m)
                objective = a + b
                if objective > best:
                    fraction = (migration_steps + time_in_state_n + b) / (
                        migration_steps + time_in_states + objective
                    )
                    if fraction <= otf:
                        best = objective
                        solution = [x, y]
            except ZeroDivisionError:
                pass
    return solution
