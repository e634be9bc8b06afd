# Table 7: Mask R-CNN R50-FPN with the sibling head, the paper's recipe.
_base_ = [
    'mmdet::_base_/models/mask-rcnn_r50_fpn.py',
    'mmdet::_base_/datasets/coco_instance.py',
    '../_base_/full_scale.py',
    '../_base_/schedules/paper_13e.py',
]
tsd_backbone_name = 'ResNet-50'
model = dict(backbone=dict(norm_cfg=dict(type='SyncBN', requires_grad=True), norm_eval=False))
