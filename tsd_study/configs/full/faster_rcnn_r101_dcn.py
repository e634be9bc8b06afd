# Table 5: ResNet-101 with deformable convolutions in stages 2-4.
_base_ = './faster_rcnn_r101.py'
tsd_backbone_name = 'ResNet-101-DCN'
model = dict(backbone=dict(dcn=dict(type='DCN', deform_groups=1, fallback_on_stride=False),
                           stage_with_dcn=(False, True, True, True)))
