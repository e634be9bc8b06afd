# Table 7: Mask R-CNN R101-FPN with TSD + PC on the box branch.
_base_ = ['./mask_rcnn_r101.py', '../_base_/tsd_roi_head.py']
model = dict(roi_head={{_base_.tsd_roi_head}})
