# The full-scale profile: COCO 2017 (mmdetection's dataset base: 2 images per GPU), 16 GPUs (2 nodes x 8), batch 32,
# ImageNet-pretrained backbones.
_base_ = ['mmdet::_base_/default_runtime.py']
custom_imports = dict(imports=['tsd_study.models'], allow_failed_imports=False)
tsd_dataset = 'coco2017'
tsd_gpus = 16
# The schedules count iterations (schedules/coco_epoch.py). A checkpoint every 1000 iterations, about four per epoch,
# bounds what a job killed without warning loses; a job SLURM stops with a signal saves one at that iteration
# (tsd_study/launch/stop_signals.py). Two are kept, in case the newest was cut short.
default_hooks = dict(
    checkpoint=dict(type='CheckpointHook', by_epoch=False, interval=1000, max_keep_ckpts=2, save_last=True))
log_processor = dict(by_epoch=False)
