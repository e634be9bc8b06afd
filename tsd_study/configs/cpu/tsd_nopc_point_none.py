# Table 4 row 1: P_c pointwise, the localization branch on the shared proposal P; no PC, no sibling head.
_base_ = './tsd_nopc.py'
model = dict(roi_head=dict(tsd=dict(reg_manner='none')))
