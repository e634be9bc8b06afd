# The paper's recipe (Section 3.1): batch 32 on 16 GPUs, SGD 0.9, wd 1e-4, warm-up 0.00125 -> 0.04 during the first
# epoch, lr / 10 at epochs 8 and 11, 13 epochs.
# Counted in iterations of an epoch's length (coco_epoch.py): a resumed run continues at the exact iteration, where
# mmengine's epoch loop would restart the interrupted epoch from its first batch.
_base_ = './coco_epoch.py'
train_cfg = dict(type='IterBasedTrainLoop', max_iters=13 * _base_.coco_epoch_iters,
                 val_interval=13 * _base_.coco_epoch_iters)
val_cfg = dict(type='ValLoop')
test_cfg = dict(type='TestLoop')
param_scheduler = [
    dict(type='LinearLR', start_factor=0.00125 / 0.04, by_epoch=False, begin=0, end=_base_.coco_epoch_iters),
    dict(type='MultiStepLR', by_epoch=False, begin=0, end=13 * _base_.coco_epoch_iters,
         milestones=[8 * _base_.coco_epoch_iters, 11 * _base_.coco_epoch_iters], gamma=0.1),
]
optim_wrapper = dict(type='OptimWrapper', optimizer=dict(type='SGD', lr=0.04, momentum=0.9, weight_decay=0.0001))
auto_scale_lr = dict(enable=False, base_batch_size=32)
