# TSD + PC with the authors' released recipe: every switch at its released value (m_c = m_r = 0.3), score threshold 0.0.
_base_ = './faster_rcnn_released.py'
model = dict(
    roi_head=dict(type='TSDRoIHead', bbox_head=dict(type='TSDBBoxHead')),
    test_cfg=dict(rcnn=dict(score_thr=0.0)))
