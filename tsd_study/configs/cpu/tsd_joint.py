# TSD jointly trained with the sibling head H*, no PC (Table 2 second row, Table 3 first row).
_base_ = './tsd_pc.py'
model = dict(roi_head=dict(tsd=dict(pc_cls=False, pc_loc=False)))
