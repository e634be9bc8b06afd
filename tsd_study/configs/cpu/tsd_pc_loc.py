# TSD + M_loc only (Table 3).
_base_ = './tsd_pc.py'
model = dict(roi_head=dict(tsd=dict(pc_cls=False)))
