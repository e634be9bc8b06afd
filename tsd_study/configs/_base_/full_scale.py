# The full-scale profile: COCO 2017 (mmdetection's dataset base: 2 images per GPU), 16 GPUs (2 nodes x 8), batch 32,
# ImageNet-pretrained backbones.
_base_ = ['mmdet::_base_/default_runtime.py']
custom_imports = dict(imports=['tsd_study.models'], allow_failed_imports=False)
tsd_dataset = 'coco2017'
tsd_gpus = 16
default_hooks = dict(checkpoint=dict(type='CheckpointHook', interval=1, max_keep_ckpts=2))
