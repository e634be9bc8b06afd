# D_head: separate classification and localization fc branches on the same RoI feature of P (Table 1, Fig. 3 (d)).
_base_ = './tsd_nopc.py'
model = dict(roi_head=dict(tsd=dict(cls_manner='none', reg_manner='none')))
