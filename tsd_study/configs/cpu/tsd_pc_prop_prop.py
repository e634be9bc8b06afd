# Table 4 row 4: both branches proposal-wise, with PC and the sibling head.
_base_ = './tsd_pc.py'
model = dict(roi_head=dict(tsd=dict(cls_manner='prop')))
