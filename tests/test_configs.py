"""Tests for the packaged configs: they parse with valid switches, the profiles share their cells byte for byte,
every study row resolves in every profile it runs in (overrides and Table 4's switch columns included), and the
full-scale Table 1 models have the paper's parameter counts."""
from __future__ import annotations

import ast
import dataclasses
import inspect
import io
from pathlib import Path

import pandas as pd
import pytest
import torch
from mmdet.datasets.samplers import AspectRatioBatchSampler
from mmengine.config import Config, ConfigDict
from mmengine.dataset import DefaultSampler, sampler as mmengine_samplers
from mmengine.optim.scheduler import LinearLR, MultiStepLR

from model_fixtures import packaged_config
from tsd_study import external_configs
from tsd_study.cli import main
from tsd_study.models import DeformRoIExtractor, TSDSwitches
from tsd_study.config_loading import CONFIG_PROFILES, CONFIG_ROOT, set_max_iters
from tsd_study.studies import load_study, study_names
from tsd_study.studies.profiles import PROFILES as STUDY_PROFILES

PARAMS_TOLERANCE = 0.02  # Table 1's parameter column, relative
PAPER_MARGINS = (0.2, 0.2)  # m_c, m_r of the paper's ablations
RELEASED_RECIPE = "full/tsd_released"
# A profile's root configs build on its scale base (dataset, schedule, machine); every other config is a switch delta.
SCALE_BASE = "../_base_/{profile}_scale.py"
# A profile may set its TSD head's scale-dependent switches (offset_init) in a head base of its own.
PROFILE_HEAD_BASE = "../_base_/{profile}_tsd_roi_head.py"
COMMON_HEAD_BASE = "../_base_/tsd_roi_head.py"
# Table 4's switch columns (definitions/table4.yaml) in the words of TSDSwitches.
MANNERS = {"Point.w": "point", "Prop.w": "prop", "-": "none"}
COCO_TRAIN_IMAGES = 117266  # train2017 images with annotations, what mmdetection's filter_empty_gt keeps
FULL_GPUS, IMAGES_PER_GPU = 16, 2
# The full schedules as they were written in epochs (mmengine steps epoch-based schedulers after each epoch):
# config, epochs, the epoch-based schedulers.
EPOCH_RECIPES = {
    "full/faster_rcnn": (13, [
        dict(type="LinearLR", start_factor=0.00125 / 0.04, by_epoch=True, begin=0, end=1, convert_to_iter_based=True),
        dict(type="MultiStepLR", by_epoch=True, begin=0, end=13, milestones=[8, 11], gamma=0.1)]),
    "full/faster_rcnn_released": (14, [
        dict(type="LinearLR", start_factor=1.0 / 32, by_epoch=False, begin=0, end=3600),
        dict(type="MultiStepLR", by_epoch=True, begin=0, end=14, milestones=[9, 12], gamma=0.1)]),
}


def config_names() -> list[str]:
    return sorted(f"{profile}/{path.stem}" for profile in CONFIG_PROFILES for path in (CONFIG_ROOT / profile).glob("*.py"))


def bases(path: Path) -> list[str]:
    """The ``_base_`` entries a config file names."""
    for node in ast.parse(path.read_text()).body:
        if isinstance(node, ast.Assign) and any(getattr(target, "id", None) == "_base_" for target in node.targets):
            value = ast.literal_eval(node.value)
            return [value] if isinstance(value, str) else list(value)
    return []


def is_profile_root(path: Path) -> bool:
    return SCALE_BASE.format(profile=path.parent.name) in bases(path)


def shared_cells() -> list[str]:
    """File names present in every profile and a profile root in none of them: the switch deltas."""
    shared = set.intersection(*({path.name for path in (CONFIG_ROOT / profile).glob("*.py")} for profile in CONFIG_PROFILES))
    return sorted(name for name in shared
                  if not any(is_profile_root(CONFIG_ROOT / profile / name) for profile in CONFIG_PROFILES))


OPTIONAL_ARGUMENTS = {"model.roi_head.tsd": {field.name for field in dataclasses.fields(TSDSwitches)},
                      "model.roi_head.derived_roi_extractor": set(inspect.signature(DeformRoIExtractor).parameters)}
"""Overrides that may name a key the config leaves at its default: a TSD switch, or an argument of the extractor of
the derived proposals."""


def has_key(cfg: Config, dotted: str) -> bool:
    """Whether ``dotted`` is a key of ``cfg``, or an optional argument of the module its parent key configures."""
    parent, _, name = dotted.rpartition(".")
    if name in OPTIONAL_ARGUMENTS.get(parent, ()):
        return True
    node = cfg.to_dict()
    for part in dotted.split("."):
        if not isinstance(node, dict) or part not in node:
            return False
        node = node[part]
    return True


@pytest.mark.parametrize("name", config_names())
def test_packaged_config_parses(name: str) -> None:
    """Every config parses; a TSD head's switches pass validation, with the paper's ablation margins
    m_c = m_r = 0.2 everywhere but in the released recipe, which keeps every released switch."""
    model = packaged_config(name).model
    assert model.type in ("FasterRCNN", "MaskRCNN")
    if model.roi_head.type != "TSDRoIHead":
        return
    switches = TSDSwitches.from_config(model.roi_head.get("tsd"))
    if name == RELEASED_RECIPE:
        assert switches == TSDSwitches()
    else:
        assert (switches.margin_cls, switches.margin_loc) == PAPER_MARGINS


def test_profiles_have_roots_and_shared_cells() -> None:
    for profile in CONFIG_PROFILES:
        assert is_profile_root(CONFIG_ROOT / profile / "faster_rcnn.py")
    assert len(shared_cells()) >= 10


@pytest.mark.parametrize("name", shared_cells())
def test_shared_cell_is_identical_in_every_profile(name: str) -> None:
    """A cell is the same switch delta in each profile, resolved against that profile's own bases (its root and,
    where it has one, its TSD head base)."""
    contents = {(CONFIG_ROOT / profile / name).read_text().replace(PROFILE_HEAD_BASE.format(profile=profile),
                                                                   COMMON_HEAD_BASE) for profile in CONFIG_PROFILES}
    assert len(contents) == 1
    datasets = [packaged_config(f"{profile}/{Path(name).stem}").tsd_dataset for profile in CONFIG_PROFILES]
    assert datasets == [packaged_config(f"{profile}/faster_rcnn").tsd_dataset for profile in CONFIG_PROFILES]
    assert len(set(datasets)) == len(CONFIG_PROFILES)


def test_every_study_row_names_an_existing_config() -> None:
    missing = [f"{study}: {row.id} -> {profile.config_dir}/{row.config}.py"
               for study in study_names() for profile in STUDY_PROFILES.values()
               for row in load_study(study).rows_for(profile.name)
               if row.config and not (CONFIG_ROOT / profile.config_dir / f"{row.config}.py").is_file()]
    assert missing == []


def test_row_overrides_set_existing_keys_to_valid_switches() -> None:
    checked = 0
    for study in study_names():
        for profile in CONFIG_PROFILES:
            for row in load_study(study).rows_for(profile):
                if not row.overrides:
                    continue
                cfg = packaged_config(f"{profile}/{row.config}")
                assert [key for key in row.overrides if not has_key(cfg, key)] == [], f"{study}: {row.id}"
                cfg.merge_from_dict(row.overrides)
                TSDSwitches.from_config(cfg.model.roi_head.tsd)
                checked += 1
    assert checked > 0


@pytest.mark.parametrize("profile", CONFIG_PROFILES)
def test_table4_switch_columns_match_the_configs(profile: str) -> None:
    """Rows with PC are jointly trained with both terms on, rows without have no sibling head; the manners match."""
    for row in load_study("table4").rows_for(profile):
        switches = TSDSwitches.from_config(packaged_config(f"{profile}/{row.config}").model.roi_head.tsd)
        with_pc = bool(row.switches["PC"])
        assert (switches.pc_cls, switches.pc_loc, switches.joint_sibling) == (with_pc,) * 3, row.id
        assert (switches.cls_manner, switches.reg_manner) == (
            MANNERS[row.switches["P_c"]], MANNERS[row.switches["P_r"]]), row.id


def test_params_table1_matches_the_paper(capsys: pytest.CaptureFixture[str]) -> None:
    """``tsd-study params table1``: every full-scale row within 2% of the paper's parameter column."""
    assert main(["params", "table1"]) == 0
    table = pd.read_csv(io.StringIO(capsys.readouterr().out)).set_index("row")
    paper = {row.name: row.paper["params_M"] for row in load_study("table1").rows_for("full")}
    assert sorted(table.index) == sorted(paper)
    for name, paper_params in paper.items():
        assert table.loc[name, "params_M"] == pytest.approx(paper_params, rel=PARAMS_TOLERANCE), name


def test_mmdet_references_resolve_to_mmdetections_files_reading_its_metafiles_once(tmp_path: Path) -> None:
    """A ``mmdet::`` base and a ``mmdet::`` model config load as mmengine resolves them; looking them up again reads
    no metafile; a missing package stays missing."""
    external_configs.remember_lookups()
    base, model = tmp_path / "base.py", tmp_path / "model.py"
    base.write_text("_base_ = ['mmdet::_base_/default_runtime.py']\n")
    model.write_text("_base_ = ['mmdet::faster_rcnn/faster-rcnn_r50_fpn_1x_coco.py']\n")
    assert Config.fromfile(base).default_scope == "mmdet"
    assert Config.fromfile(model).model.roi_head.bbox_head.type == "Shared2FCBBoxHead"
    files_read = external_configs.config_utils.load.cache_info().misses
    assert Config.fromfile(model).model.type == "FasterRCNN"
    assert Config.fromfile(base).default_scope == "mmdet"
    assert external_configs.config_utils.load.cache_info().misses == files_read
    assert not external_configs.is_installed("tsd_study_no_such_package")
    assert "tsd_study_no_such_package" not in external_configs._installed


class _SizedImages:
    """A stand-in for COCO train2017 as the samplers see it: its length and each image's size (alternating
    orientations, so that both aspect-ratio buckets fill)."""

    def __init__(self, length: int) -> None:
        self.length = length

    def __len__(self) -> int:
        return self.length

    def get_data_info(self, index: int) -> dict[str, int]:
        return {"width": 640, "height": 480} if index % 3 else {"width": 480, "height": 640}


def test_a_full_epoch_is_what_each_of_the_16_ranks_iterates_over_coco_train2017(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """The full schedules' epoch length equals the batches mmengine's sampler and mmdetection's batch sampler give
    rank 0 of 16 in one pass over COCO train2017 (the configs' dataloader: 2 images per GPU)."""
    cfg = packaged_config("full/faster_rcnn")
    assert cfg.train_dataloader.batch_size == IMAGES_PER_GPU and cfg.tsd_gpus == FULL_GPUS
    assert cfg.train_dataloader.sampler.type == "DefaultSampler"
    assert cfg.train_dataloader.batch_sampler.type == "AspectRatioBatchSampler"
    monkeypatch.setattr(mmengine_samplers, "get_dist_info", lambda: (0, FULL_GPUS))
    batches = AspectRatioBatchSampler(DefaultSampler(_SizedImages(COCO_TRAIN_IMAGES), shuffle=True, seed=0),
                                      batch_size=IMAGES_PER_GPU)
    assert cfg.coco_train_images == COCO_TRAIN_IMAGES
    assert cfg.coco_epoch_iters == len(batches) == sum(1 for _ in batches) == 3665


def learning_rates(schedulers: list[ConfigDict], iterations: int, epoch_iters: int) -> list[float]:
    """The learning rate of every iteration under ``schedulers``, stepped as mmengine's ParamSchedulerHook steps them:
    iteration-based ones (converted epoch-based ones included) after each iteration, epoch-based ones after each
    epoch."""
    optimizer = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=0.04)
    built = []
    for scheduler in schedulers:
        kind, options = {"LinearLR": LinearLR, "MultiStepLR": MultiStepLR}[scheduler["type"]], dict(scheduler)
        del options["type"]
        if options.pop("convert_to_iter_based", False):
            built.append(kind.build_iter_from_epoch(optimizer, epoch_length=epoch_iters, **options))
        else:
            built.append(kind(optimizer, **options))
    rates = []
    for iteration in range(iterations):
        rates.append(optimizer.param_groups[0]["lr"])
        for scheduler in built:
            if not scheduler.by_epoch:
                scheduler.step()
        if (iteration + 1) % epoch_iters == 0:
            for scheduler in built:
                if scheduler.by_epoch:
                    scheduler.step()
    return rates


@pytest.mark.parametrize("name", sorted(EPOCH_RECIPES))
def test_full_schedules_count_iterations_with_the_epoch_recipes_rates(name: str) -> None:
    """The full profile's schedules are iteration-based (so that a resumed run continues at its iteration) and give
    every iteration the learning rate the recipe's epoch-based schedule gave it, over as many iterations."""
    cfg = packaged_config(name)
    epochs, epoch_schedulers = EPOCH_RECIPES[name]
    epoch_iters = cfg.coco_epoch_iters
    assert cfg.train_cfg.type == "IterBasedTrainLoop" and cfg.train_cfg.max_iters == epochs * epoch_iters
    assert cfg.train_cfg.val_interval == cfg.train_cfg.max_iters
    checkpoint = cfg.default_hooks.checkpoint
    assert not checkpoint.by_epoch and checkpoint.save_last and checkpoint.interval < epoch_iters
    assert not cfg.log_processor.by_epoch
    assert all(not scheduler.by_epoch for scheduler in cfg.param_scheduler)
    per_iteration = learning_rates(cfg.param_scheduler, cfg.train_cfg.max_iters, epoch_iters)
    assert per_iteration == pytest.approx(learning_rates(epoch_schedulers, epochs * epoch_iters, epoch_iters),
                                          rel=1e-12)
    assert per_iteration[0] == pytest.approx(0.04 * cfg.param_scheduler[0].start_factor)
    assert per_iteration[-1] == pytest.approx(0.04 / 100)


@pytest.mark.parametrize("name", ["cpu/tsd_pc", "full/tsd_pc", "full/tsd_released"])
def test_max_iters_shortens_either_profiles_schedule(name: str) -> None:
    """A few iterations of any packaged config (the smoke profile, a GPU check): the steps, the validation and the
    checkpoint intervals shrink with the schedule and stay within it."""
    cfg = packaged_config(name)
    set_max_iters(cfg, 8)
    assert cfg.train_cfg.max_iters == 8 and 1 <= cfg.train_cfg.val_interval <= 8
    assert 1 <= cfg.default_hooks.checkpoint.interval <= 8
    for scheduler in cfg.param_scheduler:
        assert not scheduler.by_epoch and 1 <= scheduler.end <= 8
        assert all(0 < step <= 8 for step in scheduler.get("milestones", []))
