# Faster R-CNN with the sibling head in the CPU profile: an ImageNet-pretrained EfficientNet-Lite0 with a 64-channel
# FPN at 160 px. RoI features come from our aligned RoIAlign (DeformRoIExtractor without offsets), several times
# faster on CPU than mmcv's kernel; every CPU model uses it, baseline and TSD alike.
_base_ = [
    'mmdet::_base_/models/faster-rcnn_r50_fpn.py',
    '../_base_/datasets/shapes_detection.py',
    '../_base_/cpu_scale.py',
]
tsd_backbone_name = 'EfficientNet-Lite0'
channels = 64
model = dict(
    data_preprocessor=dict(mean=[127.0, 127.0, 127.0], std=[128.0, 128.0, 128.0], bgr_to_rgb=True),
    backbone=dict(_delete_=True, type='EfficientNetLite', pretrained=True, frozen_stages=1),
    neck=dict(in_channels=[24, 40, 112, 320], out_channels=channels),
    rpn_head=dict(in_channels=channels, feat_channels=channels, anchor_generator=dict(scales=[4])),
    roi_head=dict(
        bbox_roi_extractor=dict(_delete_=True, type='DeformRoIExtractor', out_channels=channels,
                                featmap_strides=[4, 8, 16, 32], finest_scale=28, sampling_ratio=1),
        bbox_head=dict(in_channels=channels, fc_out_channels=256, num_classes=6)),
    train_cfg=dict(
        rpn_proposal=dict(nms_pre=300, max_per_img=300),
        rcnn=dict(sampler=dict(num=64))),
    # At most 6 objects per shapes image: 100 proposals cover them (AP of cpu/tsd_pc 31.6 vs 30.3 with 300) and the
    # RoI heads' test time drops by a quarter.
    test_cfg=dict(rpn=dict(nms_pre=300, max_per_img=100)))
