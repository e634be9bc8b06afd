# Table 5: TSD + PC on the r152 backbone.
_base_ = ['./faster_rcnn_r152.py', '../_base_/tsd_roi_head.py']
model = dict(roi_head={{_base_.tsd_roi_head}})
