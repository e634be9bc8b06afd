# Table 5 in the CPU profile: a second, quite different small backbone, a thin ResNet-18 (base width 32) trained from
# scratch with BatchNorm (no ImageNet ResNet weights are reachable from CPU machines).
_base_ = './faster_rcnn.py'
tsd_backbone_name = 'ResNet-18 (thin, from scratch)'
model = dict(
    data_preprocessor=dict(mean=[123.675, 116.28, 103.53], std=[58.395, 57.12, 57.375], bgr_to_rgb=True),
    backbone=dict(_delete_=True, type='ResNet', depth=18, base_channels=32, num_stages=4, out_indices=(0, 1, 2, 3),
                  frozen_stages=-1, norm_cfg=dict(type='BN', requires_grad=True), norm_eval=False, style='pytorch'),
    neck=dict(in_channels=[32, 64, 128, 256]))
