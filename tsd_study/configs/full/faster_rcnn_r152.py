# Table 5: ResNet-152 backbone.
_base_ = './faster_rcnn.py'
tsd_backbone_name = 'ResNet-152'
model = dict(backbone=dict(depth=152, init_cfg=dict(type='Pretrained', checkpoint='torchvision://resnet152')))
