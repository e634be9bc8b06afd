# TSD + PC (M_cls and M_loc), jointly trained with the sibling head, m_c = m_r = 0.2: Table 3 last row, Table 4 row 6.
_base_ = ['./faster_rcnn.py', '../_base_/cpu_tsd_roi_head.py']
model = dict(roi_head={{_base_.tsd_roi_head}})
