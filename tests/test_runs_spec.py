"""Run specs: content-hash ids, normalised overrides, JSON round trip, input checks."""
from __future__ import annotations

import hashlib
import json
import re

import pytest

from tsd_study.runs import RunSpec, SpecError


def make_spec(**changes: object) -> RunSpec:
    fields = dict(config="cpu/tsd_pc", overrides={"model.roi_head.tsd.margin_cls": 0.3}, profile="cpu",
                  dataset="shapes", seed=0, max_iters=None)
    return RunSpec(**{**fields, **changes})


def test_run_id_is_the_sha256_of_the_canonical_json() -> None:
    spec = make_spec()
    canonical = ('{"config":"cpu/tsd_pc","dataset":"shapes","max_iters":null,'
                 '"overrides":{"model.roi_head.tsd.margin_cls":0.3},"profile":"cpu","seed":0}')
    assert spec.to_json() == canonical
    assert spec.run_id == hashlib.sha256(canonical.encode()).hexdigest()[:16]
    assert re.fullmatch(r"[0-9a-f]{16}", spec.run_id)


def test_override_order_does_not_change_the_run() -> None:
    first = make_spec(overrides={"b": 1, "a": {"y": 2, "x": 3}})
    second = make_spec(overrides={"a": {"x": 3, "y": 2}, "b": 1})
    assert first == second
    assert first.run_id == second.run_id
    assert list(first.overrides) == ["a", "b"] and list(first.overrides["a"]) == ["x", "y"]
    assert len({first, second}) == 1


@pytest.mark.parametrize("change", [dict(seed=1), dict(max_iters=6), dict(profile="smoke"), dict(dataset="shapes:48"),
                                    dict(config="cpu/tsd_joint"), dict(overrides={})])
def test_every_field_is_part_of_the_id(change: dict) -> None:
    assert make_spec(**change).run_id != make_spec().run_id


def test_json_round_trip() -> None:
    spec = make_spec(max_iters=6)
    assert RunSpec.from_json(spec.to_json()) == spec
    assert RunSpec.from_dict(json.loads(json.dumps(spec.to_dict()))).run_id == spec.run_id


@pytest.mark.parametrize(("change", "message"), [
    (dict(seed="0"), "seed: expected an integer"),
    (dict(seed=True), "seed: expected an integer"),
    (dict(max_iters=0), "max_iters: expected a positive integer"),
    (dict(config=""), "config: expected a non-empty string"),
    (dict(overrides=["a", 1]), "overrides: expected a mapping"),
    (dict(overrides={"a": float("nan")}), "not plain JSON values"),
    (dict(overrides={"a": object()}), "not plain JSON values"),
])
def test_bad_fields_are_refused_with_their_name(change: dict, message: str) -> None:
    with pytest.raises(SpecError, match=message):
        make_spec(**change)


def test_reading_a_spec_with_missing_or_extra_keys_names_the_source() -> None:
    data = make_spec().to_dict()
    del data["seed"]
    with pytest.raises(SpecError, match=r"runs/x/spec.json: expected the keys .*'seed'"):
        RunSpec.from_dict({**data, "extra": 1}, source="runs/x/spec.json")
    with pytest.raises(SpecError, match=r"runs/x/spec\.json: not valid JSON"):
        RunSpec.from_json("{", source="runs/x/spec.json")
