# D_s16: the split moves to stride 16 (Table 1).
_base_ = './ds8.py'
model = dict(backbone=dict(split_stride=16))
