# Table 5: ResNet-101 backbone.
_base_ = './faster_rcnn.py'
tsd_backbone_name = 'ResNet-101'
model = dict(backbone=dict(depth=101, init_cfg=dict(type='Pretrained', checkpoint='torchvision://resnet101')))
