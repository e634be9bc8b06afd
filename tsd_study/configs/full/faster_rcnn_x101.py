# Table 5: ResNeXt-101 (64x4d) backbone.
_base_ = './faster_rcnn.py'
tsd_backbone_name = 'ResNeXt-101 (64x4d)'
model = dict(backbone=dict(type='ResNeXt', depth=101, groups=64, base_width=4,
                           init_cfg=dict(type='Pretrained', checkpoint='open-mmlab://resnext101_64x4d')))
