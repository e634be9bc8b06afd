# D_s8: backbone stages past stride 8, the FPN and the head exist once per task (Table 1, Fig. 3 (a)).
_base_ = './dhead.py'
model = dict(
    backbone=dict(_delete_=True, type='TaskSplitBackbone', split_stride=8, backbone={{_base_.model.backbone}}),
    neck=dict(_delete_=True, type='TaskSplitNeck', neck={{_base_.model.neck}}))
