# Table 7: Mask R-CNN R101-FPN.
_base_ = './mask_rcnn.py'
tsd_backbone_name = 'ResNet-101'
model = dict(backbone=dict(depth=101, init_cfg=dict(type='Pretrained', checkpoint='torchvision://resnet101')))
