# The TSD RoI head of the CPU profile: the paper's ablation head, with its offsets starting at zero. The released
# Kaiming init of the last offset layers scales with the RoI features, whose RMS here is about 11: every derived
# proposal would start displaced by about 0.6 RoI widths (docs/cpu_profile.md).
_base_ = './tsd_roi_head.py'
tsd_roi_head = dict(tsd=dict(offset_init='zero'))
