# The authors' released recipe: lr 0.04, batch 32, 14 epochs with steps at 9 and 12, linear warm-up over 3600
# iterations from 1/32, gradient clipping at 35. Counted in iterations, as paper_13e.py.
_base_ = './coco_epoch.py'
train_cfg = dict(type='IterBasedTrainLoop', max_iters=14 * _base_.coco_epoch_iters,
                 val_interval=14 * _base_.coco_epoch_iters)
val_cfg = dict(type='ValLoop')
test_cfg = dict(type='TestLoop')
param_scheduler = [
    dict(type='LinearLR', start_factor=1.0 / 32, by_epoch=False, begin=0, end=3600),
    dict(type='MultiStepLR', by_epoch=False, begin=0, end=14 * _base_.coco_epoch_iters,
         milestones=[9 * _base_.coco_epoch_iters, 12 * _base_.coco_epoch_iters], gamma=0.1),
]
optim_wrapper = dict(
    type='OptimWrapper',
    optimizer=dict(type='SGD', lr=0.04, momentum=0.9, weight_decay=0.0001),
    clip_grad=dict(max_norm=35, norm_type=2))
auto_scale_lr = dict(enable=False, base_batch_size=32)
