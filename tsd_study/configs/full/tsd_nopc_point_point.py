# Table 4 row 2: both branches pointwise (the box is regressed relative to P); no PC, no sibling head.
_base_ = './tsd_nopc.py'
model = dict(roi_head=dict(tsd=dict(reg_manner='point')))
