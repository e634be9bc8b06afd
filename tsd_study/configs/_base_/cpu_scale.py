# The CPU profile: the synthetic shapes dataset, AdamW and an iteration-based schedule that fit a 2-core machine
# (240 iterations, so that the 22 runs of the whole study fit `make reproduce`'s 30 minutes on 2 cores).
_base_ = ['mmdet::_base_/default_runtime.py']
custom_imports = dict(imports=['tsd_study.models'], allow_failed_imports=False)
tsd_dataset = 'shapes'
tsd_gpus = 0
max_iters = 240
# Validation at 25, 50, 75 and 100% of the schedule: the learning curve (the last one gives the run's metrics).
train_cfg = dict(type='IterBasedTrainLoop', max_iters=max_iters, val_interval=max_iters // 4)
val_cfg = dict(type='ValLoop')
test_cfg = dict(type='TestLoop')
param_scheduler = [
    dict(type='LinearLR', start_factor=0.1, by_epoch=False, begin=0, end=20),
    dict(type='MultiStepLR', by_epoch=False, begin=0, end=max_iters,
         milestones=[int(max_iters * 0.8), int(max_iters * 0.93)], gamma=0.1),
]
# AdamW moves every weight by about lr per step whatever its gradient's scale, which lets the TSD offsets (linear in
# 256 hidden units) drift to many RoI widths within a hundred steps; a tenth of the rate keeps them in range, as
# mmdetection's DCN configs do for their offset layers. Models without offsets are unaffected.
optim_wrapper = dict(type='OptimWrapper', optimizer=dict(type='AdamW', lr=0.0005, weight_decay=0.05),
                     paramwise_cfg=dict(custom_keys={'offset_predictor': dict(lr_mult=0.1)}),
                     clip_grad=dict(max_norm=35, norm_type=2))
default_hooks = dict(
    logger=dict(type='LoggerHook', interval=20),
    checkpoint=dict(type='CheckpointHook', by_epoch=False, interval=100, max_keep_ckpts=1, save_last=True))
log_processor = dict(type='LogProcessor', window_size=20, by_epoch=False)
env_cfg = dict(cudnn_benchmark=False, mp_cfg=dict(mp_start_method='fork', opencv_num_threads=1),
               dist_cfg=dict(backend='gloo'))
randomness = dict(seed=0, deterministic=False)
