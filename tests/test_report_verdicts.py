"""Seed statistics and verdicts: t-intervals, seed pairing, single-seed minimum effects, dropped checks."""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest

from tsd_study.report import RunResult, StudyResults
from tsd_study.report.stats import estimate
from tsd_study.report.verdicts import MIN_EFFECT_AP, Outcome, judge, judge_check, min_effect
from tsd_study.studies import StudyError, load_study, parse_study

# Student's t quantiles t(0.975, df) from printed tables (e.g. NIST/SEMATECH e-Handbook, Table 1.4.2.7).
T_975 = {1: 12.706, 2: 4.303, 4: 2.776}


def results_of(study: str, profile: str, values: dict[str, dict[str, list[float]]]) -> StudyResults:
    """Finished runs with the given per-seed metric values, {row: {metric: [seed 0, seed 1, ...]}}."""
    definition = load_study(study)
    seeds = len(next(iter(next(iter(values.values())).values())))
    runs = tuple(RunResult(row, seed, f"{row}-{seed}", "finished", Path("/nonexistent"),
                           {metric: per_seed[seed] for metric, per_seed in metrics.items()})
                 for row, metrics in values.items() for seed in range(seeds))
    return StudyResults(definition, profile, tuple(range(seeds)), runs)


@pytest.mark.parametrize("values", [[1.0, 2.0, 3.0], [10.0, 12.5], [0.3, -0.1, 0.4, 0.2, 0.0]])
def test_estimate_is_the_student_t_interval(values: list[float]) -> None:
    n = len(values)
    half = T_975[n - 1] * np.std(values, ddof=1) / math.sqrt(n)
    result = estimate(values)
    assert result.n == n and result.mean == pytest.approx(np.mean(values))
    assert result.low == pytest.approx(np.mean(values) - half, rel=1e-3)
    assert result.high == pytest.approx(np.mean(values) + half, rel=1e-3)


def test_estimate_drops_missing_seeds_and_has_no_interval_for_one() -> None:
    single = estimate([math.nan, 4.0])
    assert (single.n, single.mean, single.has_interval) == (1, 4.0, False)
    empty = estimate([math.nan])
    assert empty.n == 0 and math.isnan(empty.mean)


@pytest.mark.parametrize(("margins", "outcome"), [
    ([0.8, 1.1, 0.9], Outcome.CONFIRMED),
    ([-0.8, -1.1, -0.9], Outcome.NOT_CONFIRMED),
    ([1.0, -0.5, 0.4], Outcome.INCONCLUSIVE),
    ([0.6], Outcome.CONFIRMED),
    ([0.4], Outcome.INCONCLUSIVE),
    ([-0.6], Outcome.NOT_CONFIRMED),
    ([math.nan], Outcome.NO_DATA),
])
def test_judge_check_uses_the_interval_or_the_minimum_effect(margins: list[float], outcome: Outcome) -> None:
    _, judged, detail = judge_check(np.array(margins), threshold=0.5)
    assert judged == outcome
    assert ("single seed" in detail) == (len(margins) == 1 and outcome != Outcome.NO_DATA)


def test_margins_are_paired_by_seed() -> None:
    # Seeds move both rows together; the paired differences (0.5, 0.6, 0.4) are tight, the unpaired spread is not.
    results = results_of("table2", "cpu", {"tsd_nopc": {"AP": [30.0, 40.0, 50.0]},
                                           "tsd_joint": {"AP": [30.5, 40.6, 50.4]}})
    (verdict,) = judge(results)
    assert verdict.outcome == Outcome.CONFIRMED
    assert verdict.checks[0].margin.mean == pytest.approx(0.5)
    assert verdict.checks[0].margin.low > 0
    unpaired = estimate(results.values("tsd_joint", "AP")).low - estimate(results.values("tsd_nopc", "AP")).high
    assert unpaired < 0


def test_one_failing_check_makes_the_claim_not_confirmed() -> None:
    results = results_of("table1", "cpu", {"sibling": {"AP": [40.0]}, "ds8": {"AP": [30.0]},
                                           "ds16": {"AP": [41.0]}, "ds32": {"AP": [30.0]},
                                           "dhead": {"AP": [40.2]}, "tsd_nopc": {"AP": [41.0]}})
    verdicts = {verdict.claim.id: verdict for verdict in judge(results)}
    assert verdicts["split-backbone-hurts"].outcome == Outcome.NOT_CONFIRMED
    assert verdicts["split-head-helps"].outcome == Outcome.INCONCLUSIVE
    assert "single seed" in verdicts["split-head-helps"].detail
    assert verdicts["tsd-beats-dhead"].outcome == Outcome.CONFIRMED
    assert {verdict.paper for verdict in verdicts.values()} == {"holds"}


def test_checks_on_rows_the_profile_does_not_train_are_dropped() -> None:
    results = results_of("table5", "cpu", {
        "lite0": {"AP": [30.0], "latency_ms": [100.0]}, "lite0_tsd": {"AP": [32.0], "latency_ms": [110.0]},
        "r18": {"AP": [20.0], "latency_ms": [50.0]}, "r18_tsd": {"AP": [19.0], "latency_ms": [60.0]}})
    gain, runtime = judge(results)
    assert [check.check.source for check in gain.checks] == ["lite0_tsd.AP > lite0.AP", "r18_tsd.AP > r18.AP"]
    assert gain.outcome == Outcome.NOT_CONFIRMED
    assert "not tested here: 5 of its 7 checks" in gain.detail
    assert gain.paper == "no paper numbers"
    # Runtime ratios: 1.10 passes the 1.15 bound by 0.05 > the claim's 0.02 tolerance; 1.20 fails it by 0.05.
    assert min_effect(runtime.claim, "cpu") == 0.02
    assert [check.outcome for check in runtime.checks] == [Outcome.CONFIRMED, Outcome.NOT_CONFIRMED]


def test_a_claim_without_trained_rows_is_not_tested() -> None:
    results = StudyResults(load_study("table8"), "cpu", (0,), ())
    (verdict,) = judge(results)
    assert verdict.outcome == Outcome.NOT_TESTED and verdict.checks == ()


def test_derived_metrics_are_computed_seed_by_seed() -> None:
    scales = {f"AP_{scale}_{iou}": [10.0 + iou / 10, 11.0 + iou / 10] for scale in ("small", "medium", "large")
              for iou in (50, 60, 70, 80, 90)}
    results = results_of("table9", "cpu", {"sibling": scales,
                                           "tsd_pc": {name: [value + 1.0 for value in per_seed]
                                                      for name, per_seed in scales.items()}})
    np.testing.assert_allclose(results.values("sibling", "AP_small_50to90"), [17.0, 18.0])
    assert results.paper_value("sibling", "AP_small_50to90") == pytest.approx((38.4 + 33.7 + 26.7 + 16.2 + 3.6) / 5)
    verdicts = {verdict.claim.id: verdict.outcome for verdict in judge(results)}
    assert verdicts["gain-every-scale"] == Outcome.CONFIRMED  # +1.0 on both seeds: a zero-width interval above 0
    assert verdicts["gain-grows-with-iou"] == Outcome.INCONCLUSIVE  # the same gain at every IoU: margin exactly 0


def test_every_profile_has_a_minimum_effect() -> None:
    from tsd_study.studies.profiles import PROFILES

    assert set(MIN_EFFECT_AP) == set(PROFILES)


@pytest.mark.parametrize("tolerance", [-0.1, 0, "small", True])
def test_a_bad_claim_tolerance_names_its_key(tolerance: object) -> None:
    definition = {"name": "t", "title": "t", "summary": "s", "metrics": ["AP"],
                  "rows": [{"id": "a", "name": "A"}, {"id": "b", "name": "B"}],
                  "claims": [{"id": "c", "text": "c", "tolerance": tolerance, "checks": ["a.AP > b.AP"]}]}
    with pytest.raises(StudyError, match=r"t\.yaml: claims\[0\]\.tolerance: .* must be a positive number"):
        parse_study(definition, source="t.yaml")
