# The paper's recipe (Section 3.1): batch 32 on 16 GPUs, SGD 0.9, wd 1e-4, warm-up 0.00125 -> 0.04 during the first
# epoch, lr / 10 at epochs 8 and 11, 13 epochs.
train_cfg = dict(type='EpochBasedTrainLoop', max_epochs=13, val_interval=13)
val_cfg = dict(type='ValLoop')
test_cfg = dict(type='TestLoop')
param_scheduler = [
    dict(type='LinearLR', start_factor=0.00125 / 0.04, by_epoch=True, begin=0, end=1, convert_to_iter_based=True),
    dict(type='MultiStepLR', by_epoch=True, begin=0, end=13, milestones=[8, 11], gamma=0.1),
]
optim_wrapper = dict(type='OptimWrapper', optimizer=dict(type='SGD', lr=0.04, momentum=0.9, weight_decay=0.0001))
auto_scale_lr = dict(enable=False, base_batch_size=32)
