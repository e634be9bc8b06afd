# Table 7: Mask R-CNN with TSD + PC on the box branch only (the mask branch is mmdetection's).
_base_ = ['./mask_rcnn.py', '../_base_/cpu_tsd_roi_head.py']
model = dict(roi_head={{_base_.tsd_roi_head}})
