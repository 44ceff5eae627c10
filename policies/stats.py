"""The statistics of a policy evaluation: Wilson intervals, paired comparisons, rank agreement.

Success rates from a few dozen episodes are uncertain; the Wilson score interval is the standard
binomial interval that stays inside [0, 1] and is honest at 0/n and n/n (the normal "Wald" interval
collapses there). Policies evaluated on the same (task, seed) episodes are compared paired: the exact
McNemar test on the discordant episodes. Rank agreement with another evaluator (a real robot, a
simulator) is Pearson, Spearman and SimplerEnv's mean maximum rank violation (MMRV).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

Z95 = 1.959963984540054  # the 97.5% quantile of the standard normal


def wilson_interval(successes: int, n: int, z: float = Z95) -> tuple[float, float]:
    """The Wilson score interval (default 95%) of a success rate successes / n; (0, 1) when n is 0."""
    if n < 0 or not 0 <= successes <= n:
        raise ValueError(f"need 0 <= successes <= n, got successes={successes}, n={n}")
    if n == 0:
        return 0.0, 1.0
    p = successes / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    # at 0/n and n/n the interval touches the boundary exactly (rounding would leave it a hair inside)
    lo = 0.0 if successes == 0 else max(0.0, centre - half)
    hi = 1.0 if successes == n else min(1.0, centre + half)
    return lo, hi


def mcnemar_exact(a_only: int, b_only: int) -> float:
    """Two-sided exact McNemar p-value from the discordant pairs (a succeeded alone, b succeeded alone)."""
    n = a_only + b_only
    if n == 0:
        return 1.0
    k = min(a_only, b_only)
    tail = sum(math.comb(n, i) for i in range(k + 1)) / 2**n
    return min(1.0, 2 * tail)


def paired_comparison(a: Sequence[bool], b: Sequence[bool]) -> dict[str, float | int]:
    """Policy a vs b on the same episodes: rate difference, discordant counts and McNemar's p-value."""
    if len(a) != len(b):
        raise ValueError(f"paired outcomes must have equal lengths, got {len(a)} and {len(b)}")
    a_only = sum(1 for x, y in zip(a, b) if x and not y)
    b_only = sum(1 for x, y in zip(a, b) if y and not x)
    n = len(a)
    return {
        "episodes": n,
        "difference": (sum(map(bool, a)) - sum(map(bool, b))) / n if n else 0.0,
        "a_only": a_only,
        "b_only": b_only,
        "p_value": mcnemar_exact(a_only, b_only),
    }


def pearson(x: Sequence[float], y: Sequence[float]) -> float:
    """Pearson correlation (nan when either side is constant)."""
    if len(x) != len(y) or len(x) < 2:
        raise ValueError(f"need two sequences of equal length >= 2, got {len(x)} and {len(y)}")
    mx, my = sum(x) / len(x), sum(y) / len(y)
    sxy = sum((a - mx) * (b - my) for a, b in zip(x, y))
    sxx, syy = sum((a - mx) ** 2 for a in x), sum((b - my) ** 2 for b in y)
    return sxy / math.sqrt(sxx * syy) if sxx > 0 and syy > 0 else float("nan")


def _ranks(values: Sequence[float]) -> list[float]:
    """Ranks 1..n, ties given their average rank."""
    order = sorted(range(len(values)), key=lambda i: values[i])
    ranks = [0.0] * len(values)
    i = 0
    while i < len(order):
        j = i
        while j + 1 < len(order) and values[order[j + 1]] == values[order[i]]:
            j += 1
        for k in range(i, j + 1):
            ranks[order[k]] = (i + j) / 2 + 1
        i = j + 1
    return ranks


def spearman(x: Sequence[float], y: Sequence[float]) -> float:
    """Spearman rank correlation: Pearson on the (tie-averaged) ranks."""
    return pearson(_ranks(x), _ranks(y))


def mmrv(reference: Sequence[float], measured: Sequence[float]) -> float:
    """Mean maximum rank violation (SimplerEnv): for each policy, the largest reference-rate gap to a policy
    the measured rates order the other way, averaged. 0 when the orders agree."""
    n = len(reference)
    if n != len(measured) or n < 2:
        raise ValueError(f"need two sequences of equal length >= 2, got {n} and {len(measured)}")
    total = 0.0
    for i in range(n):
        worst = 0.0
        for j in range(n):
            if (measured[i] < measured[j]) != (reference[i] < reference[j]):
                worst = max(worst, abs(reference[i] - reference[j]))
        total += worst
    return total / n


def rank_agreement(reference: Sequence[float], measured: Sequence[float]) -> dict[str, float]:
    """Pearson, Spearman and MMRV of success rates measured here against rates measured elsewhere."""
    return {
        "pearson": pearson(reference, measured),
        "spearman": spearman(reference, measured),
        "mmrv": mmrv(reference, measured),
    }
