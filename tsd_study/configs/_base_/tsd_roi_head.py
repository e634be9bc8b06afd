# The TSD RoI head (registered by the profile bases' custom_imports) as a delta on a Faster/Mask R-CNN config: `model = dict(roi_head={{_base_.tsd_roi_head}})`.
# Switches not named here take the released code's values (tsd_study/switches.py); the paper's ablations
# use m_c = m_r = 0.2.
tsd_roi_head = dict(
    type='TSDRoIHead',
    bbox_head=dict(type='TSDBBoxHead'),
    tsd=dict(margin_cls=0.2, margin_loc=0.2))
