# The CPU profile: the synthetic shapes dataset, AdamW and an iteration-based schedule that fit a 2-core machine.
# docs/cpu_profile.md has the experiments behind every number here. 1000 iterations of 4 images: at AdamW's constant
# rate the reference rows' validation AP flattens from about 750 iterations on, so the rate drops there (80%, then
# 93%); the learning curve is evaluated at 25, 50, 75 and 100% of the schedule.
_base_ = ['mmdet::_base_/default_runtime.py']
custom_imports = dict(imports=['tsd_study.models'], allow_failed_imports=False)
tsd_dataset = 'shapes'
tsd_gpus = 0
max_iters = 1000
train_cfg = dict(type='IterBasedTrainLoop', max_iters=max_iters, val_interval=max_iters // 4)
val_cfg = dict(type='ValLoop')
test_cfg = dict(type='TestLoop')
param_scheduler = [
    dict(type='LinearLR', start_factor=0.1, by_epoch=False, begin=0, end=max_iters // 10),
    dict(type='MultiStepLR', by_epoch=False, begin=0, end=max_iters,
         milestones=[int(max_iters * 0.8), int(max_iters * 0.93)], gamma=0.1),
]
# AdamW moves every weight by about lr per step whatever its gradient's scale, which lets the TSD offsets (linear in
# 256 hidden units) drift to many RoI widths within a hundred steps; a tenth of the rate keeps them in range, as
# mmdetection's DCN configs do for their offset layers. Models without offsets are unaffected.
# fused=True: torch's one-kernel AdamW, the same update in half the optimizer time of the per-tensor loop
# (`tsd-study bench step --after optim_wrapper.optimizer.fused=True`, docs/cpu_profile.md).
optim_wrapper = dict(type='OptimWrapper', optimizer=dict(type='AdamW', lr=0.0005, weight_decay=0.05, fused=True),
                     paramwise_cfg=dict(custom_keys={'offset_predictor': dict(lr_mult=0.1)}),
                     clip_grad=dict(max_norm=35, norm_type=2))
default_hooks = dict(
    logger=dict(type='LoggerHook', interval=20),
    checkpoint=dict(type='CheckpointHook', by_epoch=False, interval=max_iters // 4, max_keep_ckpts=1, save_last=True))
log_processor = dict(type='LogProcessor', window_size=20, by_epoch=False)
env_cfg = dict(cudnn_benchmark=False, mp_cfg=dict(mp_start_method='fork', opencv_num_threads=1),
               dist_cfg=dict(backend='gloo'))
randomness = dict(seed=0, deterministic=False)
