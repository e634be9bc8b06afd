# "TSD w/o PC": no sibling head, no progressive constraint (Table 1 last row, Table 2 first row, Table 4 row 3).
_base_ = './tsd_pc.py'
model = dict(roi_head=dict(tsd=dict(joint_sibling=False, pc_cls=False, pc_loc=False)))
