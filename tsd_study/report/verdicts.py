"""Verdicts on the paper's claims, computed from our numbers (and, for reference, from the paper's).

A claim holds when all its checks hold. A check ``lhs OP rhs`` is evaluated seed by seed, so its margin (how far the
inequality holds, negative when it fails) is paired by seed, and the margin's 95% t-interval over seeds decides
against the minimum effect (the claim's ``tolerance`` in its study definition, else the profile's default for AP
points, MIN_EFFECT_AP): the whole interval above it is confirmed, the whole interval below it not confirmed (the
effect is absent, reversed or too small to count), an interval that straddles it inconclusive. A single seed has no
interval, so its checks are inconclusive whatever their margin. A verdict that rests on a row whose learning curve
had not flattened says so.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from enum import StrEnum

import numpy as np
import pandas as pd

from tsd_study.studies import Check, Claim

from .collect import StudyResults
from .stats import Estimate, estimate

MIN_EFFECT_AP = {"cpu": 0.5, "smoke": 0.5, "full": 0.3}
"""With one seed, the smallest AP difference (in points) taken as an effect, per profile."""


class Outcome(StrEnum):
    CONFIRMED = "confirmed"
    NOT_CONFIRMED = "not confirmed"
    INCONCLUSIVE = "inconclusive"
    NO_DATA = "no data yet"
    NOT_TESTED = "not tested in this profile"


@dataclass(frozen=True)
class CheckVerdict:
    """One check of a claim: our margin (seed-paired), its outcome, and the margin on the paper's numbers."""

    check: Check
    margin: Estimate
    outcome: Outcome
    detail: str
    paper_margin: float


@dataclass(frozen=True)
class ClaimVerdict:
    """A claim's outcome over the checks that apply in the profile; ``unconverged`` names the rows it rests on
    whose learning curves had not flattened."""

    study: str
    claim: Claim
    outcome: Outcome
    detail: str
    paper: str
    checks: tuple[CheckVerdict, ...]
    unconverged: tuple[str, ...] = ()


def min_effect(claim: Claim, profile: str) -> float:
    """The smallest margin that counts for ``claim``: its own tolerance, else the profile's default for AP points."""
    if claim.tolerance is not None:
        return claim.tolerance
    try:
        return MIN_EFFECT_AP[profile]
    except KeyError:
        raise ValueError(f"no minimum effect for profile {profile!r}; known: {', '.join(MIN_EFFECT_AP)}") from None


def rule_text(profile: str) -> str:
    """How verdicts are decided, in one sentence for reports."""
    return (f"the 95% t-interval over seeds of each check's seed-paired margin must lie above the minimum effect "
            f"({MIN_EFFECT_AP[profile]:g} AP points, or the claim's own tolerance where it is not in AP points) to "
            f"confirm, below it to not confirm (absent, reversed or too small an effect); an interval that straddles "
            f"it, or a single seed, is inconclusive.")


def judge_check(margins: np.ndarray, minimum: float) -> tuple[Estimate, Outcome, str]:
    """The outcome of one check from its per-seed margins (NaN: a seed without a number) and the minimum effect."""
    margin = estimate(margins)
    if margin.n == 0:
        return margin, Outcome.NO_DATA, "no finished run for every row of the check"
    if not margin.has_interval:
        return margin, Outcome.INCONCLUSIVE, f"margin {margin.mean:+.2f}, one seed: no interval"
    outcome = (Outcome.CONFIRMED if margin.low > minimum else
               Outcome.NOT_CONFIRMED if margin.high < minimum else Outcome.INCONCLUSIVE)
    return margin, outcome, (f"margin {margin.mean:+.2f}, 95% CI [{margin.low:+.2f}, {margin.high:+.2f}] "
                             f"against a minimum effect of {minimum:g}, {margin.n} seeds")


def judge_claim(results: StudyResults, claim: Claim) -> ClaimVerdict:
    """The verdict on ``claim`` from the checks whose rows the profile trains."""
    checks = claim.checks_for(results.trained_row_ids)
    if not checks:
        return ClaimVerdict(results.study.name, claim, Outcome.NOT_TESTED,
                            "none of its rows is trained in this profile", "", ())
    minimum = min_effect(claim, results.profile)
    verdicts = []
    for check in checks:
        margin, outcome, detail = judge_check(np.asarray(check.margin(results.values), dtype=float), minimum)
        verdicts.append(CheckVerdict(check, margin, outcome, detail, float(check.margin(results.paper_value))))
    rows = sorted(set().union(*(check.rows for check in checks)))
    unconverged = tuple(row for row in rows if results.converged(row) is False)
    detail = _summary(verdicts, len(claim.checks))
    if unconverged:
        detail += f"; rests on rows whose learning curve had not flattened: {', '.join(unconverged)}"
    return ClaimVerdict(results.study.name, claim, _combine(verdicts), detail, _paper_summary(verdicts),
                        tuple(verdicts), unconverged)


def judge(results: StudyResults) -> tuple[ClaimVerdict, ...]:
    """A verdict on every claim of the study."""
    return tuple(judge_claim(results, claim) for claim in results.study.claims)


class Direction(StrEnum):
    """Where a row's effect against its reference lies, by its seed-paired 95% interval and the minimum effect."""

    UP = "raises it"
    DOWN = "lowers it"
    NONE = "changes it by less than the minimum effect"
    UNDECIDED = "undecided (the interval straddles a minimum effect)"
    NO_INTERVAL = "no interval (one seed)"
    NO_DATA = "not measured (no finished run for every seed of the row or its reference)"


def effect_direction(effect: Estimate, minimum: float) -> Direction:
    """UP or DOWN when the whole interval lies beyond +-``minimum``, NONE when it lies within, else UNDECIDED."""
    if effect.n == 0:
        return Direction.NO_DATA
    if not effect.has_interval:
        return Direction.NO_INTERVAL
    if effect.low > minimum:
        return Direction.UP
    if effect.high < -minimum:
        return Direction.DOWN
    if -minimum < effect.low and effect.high < minimum:
        return Direction.NONE
    return Direction.UNDECIDED


def effect_directions(results: StudyResults, metric: str = "AP") -> pd.DataFrame:
    """Per trained row with a reference row: our effect on ``metric`` against it, its interval, and its direction
    judged against the profile's minimum effect (e.g. under which choices PC raises or lowers AP)."""
    minimum = MIN_EFFECT_AP[results.profile]
    lines = []
    for row in results.rows:
        reference = results.study.reference_of(row.id)
        if reference is None or not row.runs_in(results.profile):
            continue
        effect = results.effect(row.id, metric)
        lines.append((row.name, results.study.row(reference).name, effect.mean, effect.low, effect.high, effect.n,
                      effect_direction(effect, minimum)))
    return pd.DataFrame(lines, columns=["row", "against", "effect", "low", "high", "n", "direction"])


def verdict_table(verdicts: tuple[ClaimVerdict, ...]) -> pd.DataFrame:
    """One line per claim: study, claim, our verdict with its basis, and whether the paper's own numbers hold."""
    return pd.DataFrame([(verdict.study, verdict.claim.text, verdict.outcome.value, verdict.detail, verdict.paper)
                         for verdict in verdicts], columns=["study", "claim", "verdict", "basis", "paper"])


def _combine(checks: list[CheckVerdict]) -> Outcome:
    """All checks must hold: one failure decides, then missing data, then doubt."""
    outcomes = {check.outcome for check in checks}
    for outcome in (Outcome.NOT_CONFIRMED, Outcome.NO_DATA, Outcome.INCONCLUSIVE):
        if outcome in outcomes:
            return outcome
    return Outcome.CONFIRMED


def _summary(checks: list[CheckVerdict], declared: int) -> str:
    counts = {outcome: sum(check.outcome == outcome for check in checks) for outcome in Outcome}
    parts = [f"{count} {outcome.value}" for outcome, count in counts.items() if count]
    text = f"{len(checks)} check{'s' if len(checks) > 1 else ''}: {', '.join(parts)}"
    if len(checks) == 1:
        text = f"{checks[0].check.source}: {checks[0].detail}"
    elif any(check.margin.n == 1 for check in checks):
        text += " (one seed: no interval)"
    if len(checks) < declared:
        text += f"; not tested here: {declared - len(checks)} of its {declared} checks (rows of another profile)"
    return text


def _paper_summary(checks: list[CheckVerdict]) -> str:
    margins = [check.paper_margin for check in checks]
    if any(math.isnan(margin) for margin in margins):
        return "no paper numbers"
    return "holds" if all(margin > 0 for margin in margins) else "fails"
