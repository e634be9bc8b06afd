"""A run: one (config, overrides, profile, dataset, seed, schedule length), named by the hash of its content."""
from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, fields
from typing import Any

RUN_ID_LENGTH = 16


class SpecError(ValueError):
    """A run spec that cannot be built or read; the message names the field or file."""


@dataclass(frozen=True)
class RunSpec:
    """Everything that decides what a training run computes; equal specs are the same run.

    Attributes:
        config: packaged config name, ``<profile config dir>/<row config>`` (e.g. ``cpu/tsd_pc``).
        overrides: mmengine ``cfg_options`` (dotted keys), stored with sorted keys.
        profile: the study profile the run belongs to (``full``, ``cpu``, ``smoke``).
        dataset: dataset reference (``shapes:48``, ``coco2017``, a directory).
        seed: becomes ``randomness.seed`` in the config.
        max_iters: schedule length override, None to keep the config's.
    """

    config: str
    overrides: dict[str, Any]
    profile: str
    dataset: str
    seed: int
    max_iters: int | None

    def __post_init__(self) -> None:
        for name in ("config", "profile", "dataset"):
            if not isinstance(getattr(self, name), str) or not getattr(self, name):
                raise SpecError(f"{name}: expected a non-empty string, got {getattr(self, name)!r}")
        if not _is_int(self.seed):
            raise SpecError(f"seed: expected an integer, got {self.seed!r}")
        if self.max_iters is not None and not (_is_int(self.max_iters) and self.max_iters > 0):
            raise SpecError(f"max_iters: expected a positive integer or None, got {self.max_iters!r}")
        object.__setattr__(self, "overrides", canonical_overrides(self.overrides))

    def __hash__(self) -> int:
        return hash(self.run_id)

    @property
    def run_id(self) -> str:
        """sha256 of the canonical JSON of the spec, first 16 hex digits."""
        return hashlib.sha256(self.to_json().encode()).hexdigest()[:RUN_ID_LENGTH]

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def to_json(self) -> str:
        """Canonical JSON: sorted keys, no whitespace; the hash input, so the byte form is stable."""
        return json.dumps(self.to_dict(), sort_keys=True, separators=(",", ":"))

    @classmethod
    def from_dict(cls, data: Any, source: str = "run spec") -> RunSpec:
        """The spec ``to_dict`` wrote; ``source`` names where it came from in errors."""
        names = {spec_field.name for spec_field in fields(cls)}
        if not isinstance(data, dict) or set(data) != names:
            found = sorted(data) if isinstance(data, dict) else type(data).__name__
            raise SpecError(f"{source}: expected the keys {sorted(names)}, found {found}")
        return cls(**data)

    @classmethod
    def from_json(cls, text: str, source: str = "run spec") -> RunSpec:
        try:
            return cls.from_dict(json.loads(text), source)
        except json.JSONDecodeError as error:
            raise SpecError(f"{source}: not valid JSON ({error.msg} at line {error.lineno})") from None


def canonical_overrides(overrides: Any) -> dict[str, Any]:
    """``overrides`` with keys sorted at every level; SpecError unless it maps string keys to JSON values."""
    if not isinstance(overrides, dict) or not all(isinstance(key, str) for key in overrides):
        raise SpecError(f"overrides: expected a mapping of dotted config keys to values, got {overrides!r}")
    try:
        canonical: dict[str, Any] = json.loads(json.dumps(overrides, sort_keys=True, allow_nan=False))
    except (TypeError, ValueError) as error:
        raise SpecError(f"overrides: {overrides!r} are not plain JSON values ({error})") from None
    return canonical


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)
