"""Every CPU-profile model of Tables 1, 2, 3, 4 and 7 builds, trains one step and predicts, on CPU."""
from __future__ import annotations

import pytest
import torch
from mmdet.testing import demo_mm_inputs
from mmengine.optim import OptimWrapper

from model_fixtures import IMAGE_SIZE, build_detector
from tsd_study.studies import load_study

TABLES = ("table1", "table2", "table3", "table4", "table7")
PROFILE = "cpu"

# Losses every two-stage detector reports, then the extra ones of each switch.
BASE_LOSSES = {"loss", "loss_rpn_cls", "loss_rpn_bbox", "loss_cls", "loss_bbox", "acc"}
SIBLING = {"loss_sibling_cls", "loss_sibling_bbox", "acc_sibling"}
PC_CLS = {"loss_pc_cls"}
PC_LOC = {"loss_pc_loc"}
MASK = {"loss_mask"}
# The extra losses of each config the tables name, written out from the config comments and the paper:
# the sibling losses exactly when H* is trained jointly, each PC term exactly when it is switched on.
EXTRA_LOSSES = {
    "faster_rcnn": set(),
    "ds8": set(),
    "ds16": set(),
    "ds32": set(),
    "dhead": set(),
    "tsd_nopc": set(),
    "tsd_nopc_point_none": set(),
    "tsd_nopc_point_point": set(),
    "tsd_joint": SIBLING,
    "tsd_pc_cls": SIBLING | PC_CLS,
    "tsd_pc_loc": SIBLING | PC_LOC,
    "tsd_pc": SIBLING | PC_CLS | PC_LOC,
    "tsd_pc_prop_prop": SIBLING | PC_CLS | PC_LOC,
    "tsd_pc_point_point": SIBLING | PC_CLS | PC_LOC,
    "mask_rcnn": MASK,
    "tsd_pc_mask_rcnn": MASK | SIBLING | PC_CLS | PC_LOC,
}


def table_configs() -> list[str]:
    """The configs the CPU rows of the tables name, in first-seen order."""
    configs = [row.config for table in TABLES for row in load_study(table).rows_for(PROFILE) if row.config]
    return list(dict.fromkeys(configs))


def test_every_table_config_has_expected_losses() -> None:
    """A config added to a table must get its expected losses written above."""
    assert set(table_configs()) == set(EXTRA_LOSSES)


@pytest.mark.parametrize("config", table_configs())
def test_variant_trains_one_step_and_predicts(config: str) -> None:
    """One SGD step through mmengine's train_step (finite losses, exactly the expected names, finite weights after
    the update), then one test_step with finite, in-range predictions for both images."""
    torch.manual_seed(0)
    model = build_detector(config)
    with_mask = bool(EXTRA_LOSSES[config] & MASK)
    num_classes = model.roi_head.bbox_head.num_classes
    data = demo_mm_inputs(batch_size=2, image_shapes=(3, IMAGE_SIZE, IMAGE_SIZE), num_items=[3, 1],
                          num_classes=num_classes, with_mask=with_mask)
    optim_wrapper = OptimWrapper(torch.optim.SGD(model.parameters(), lr=0.01))
    log_vars = model.train_step(data, optim_wrapper)
    assert set(log_vars) == BASE_LOSSES | EXTRA_LOSSES[config]
    assert all(torch.isfinite(torch.as_tensor(value)) for value in log_vars.values())
    assert log_vars["loss"] > 0
    assert all(torch.isfinite(parameter).all() for parameter in model.parameters())

    model.eval()
    predictions = [sample.pred_instances for sample in model.test_step(data)]
    assert len(predictions) == 2
    for instances in predictions:
        assert torch.isfinite(instances.bboxes).all() and torch.isfinite(instances.scores).all()
        assert ((instances.labels >= 0) & (instances.labels < num_classes)).all()
        if with_mask:
            assert instances.masks.shape[0] == len(instances)
