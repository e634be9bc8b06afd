# Table 5: TSD + PC on the r18 backbone.
_base_ = ['./faster_rcnn_r18.py', '../_base_/cpu_tsd_roi_head.py']
model = dict(roi_head={{_base_.tsd_roi_head}})
