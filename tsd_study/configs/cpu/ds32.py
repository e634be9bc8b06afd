# D_s32: the split moves to stride 32 (Table 1).
_base_ = './ds8.py'
model = dict(backbone=dict(split_stride=32))
