# Table 5: TSD + PC on the r101_dcn backbone.
_base_ = ['./faster_rcnn_r101_dcn.py', '../_base_/tsd_roi_head.py']
model = dict(roi_head={{_base_.tsd_roi_head}})
