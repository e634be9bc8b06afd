# Table 4 row 5: both branches pointwise (the box is regressed relative to P), with PC and the sibling head.
_base_ = './tsd_pc.py'
model = dict(roi_head=dict(tsd=dict(reg_manner='point')))
