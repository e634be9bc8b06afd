"""Study profiles: one code path, three scales. A profile picks the config tree, the dataset and the schedule length."""
from __future__ import annotations

from dataclasses import dataclass, replace

from .definition import StudyError


@dataclass(frozen=True)
class Profile:
    """How a study's rows become runs at one scale.

    Attributes:
        name: profile name used on the command line and in notebooks.
        config_dir: the packaged config tree its rows resolve in (``tsd_study/configs/<config_dir>/<row.config>.py``).
        dataset: dataset reference for every run, or None to keep each config's ``tsd_dataset``.
        max_iters: schedule length override for iteration-based configs, or None to keep the config's.
        description: one line for ``tsd-study study list`` and the reports.
        reproduced: the studies ``tsd-study reproduce`` takes when no ``--only`` is given (None: every study); the
            others run with ``--only`` (e.g. ``--only all``), where the profile's time budget cannot hold them.
        plateau_rise_ap: a row counts as converged when its mean AP rose by less than this many points between the
            learning-curve points at 50% and 75% of its schedule (both before the first learning-rate step, see
            docs/cpu_profile.md); None where the rule does not apply (epoch schedules with a step before 75%).
    """

    name: str
    config_dir: str
    dataset: str | None
    max_iters: int | None
    description: str
    plateau_rise_ap: float | None = None
    reproduced: tuple[str, ...] | None = None


PLATEAU_RISE_AP = 10.0
"""The CPU profile's convergence rule (docs/cpu_profile.md): less than this AP rise from 50% to 75% of the schedule,
where the reference rows rise by about 7 before the rate drops at 80%."""

CPU_REPRODUCED = ("table2", "table9")
"""What `make reproduce` trains at three seeds within its 60 minutes on 2 cores (sibling head, TSD w/o PC, TSD with
H*, TSD + PC: 12 runs); every other study needs `--only` (docs/cpu_profile.md, "The time budget")."""

PROFILES: dict[str, Profile] = {
    profile.name: profile for profile in (
        Profile("full", "full", None, None,
                "COCO 2017, the paper's recipe (13 epochs, batch 32), 16 GPUs through SLURM"),
        Profile("cpu", "cpu", None, None,
                "the synthetic shapes dataset, EfficientNet-Lite0 / small backbones, minutes per run on 2 CPU cores",
                plateau_rise_ap=PLATEAU_RISE_AP, reproduced=CPU_REPRODUCED),
        Profile("smoke", "cpu", "shapes:48", 6,
                "the CPU configs on 48 shapes images for 6 iterations: seconds per run, for tests"),
    )
}


def get_profile(name: str) -> Profile:
    """The profile called ``name``; an error lists the known ones."""
    try:
        return PROFILES[name]
    except KeyError:
        raise StudyError(f"unknown profile {name!r}; known: {', '.join(PROFILES)}") from None


def study_profile(profile: str | Profile, dataset: str | None = None) -> Profile:
    """The profile called ``profile``, with its dataset replaced by ``dataset`` when one is given."""
    resolved = get_profile(profile) if isinstance(profile, str) else profile
    return replace(resolved, dataset=dataset) if dataset else resolved
