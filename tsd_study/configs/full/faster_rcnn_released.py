# The baseline with the authors' released recipe: plain frozen BN, 2000 RPN proposals in training, SmoothL1 losses
# (beta 1/9 in the RPN, 1.0 in the R-CNN head), test score threshold 0.05.
_base_ = [
    'mmdet::_base_/models/faster-rcnn_r50_fpn.py',
    'mmdet::_base_/datasets/coco_detection.py',
    '../_base_/full_scale.py',
    '../_base_/schedules/released_14e.py',
]
tsd_backbone_name = 'ResNet-50'
model = dict(
    rpn_head=dict(loss_bbox=dict(_delete_=True, type='SmoothL1Loss', beta=1.0 / 9.0, loss_weight=1.0)),
    roi_head=dict(bbox_head=dict(loss_bbox=dict(_delete_=True, type='SmoothL1Loss', beta=1.0, loss_weight=1.0))),
    train_cfg=dict(rpn_proposal=dict(nms_pre=2000, max_per_img=2000)),
    test_cfg=dict(rpn=dict(nms_pre=1000, max_per_img=1000), rcnn=dict(score_thr=0.05)))
