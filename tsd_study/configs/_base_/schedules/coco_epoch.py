# One epoch of the full profile in iterations, from the length of COCO train2017 as mmdetection trains on it: the
# 117,266 images with annotations (filter_empty_gt drops 1,021 of 118,287), shared by 16 GPUs (mmengine's
# DefaultSampler rounds each rank's share up to 7330) in batches of 2 per GPU (mmdetection's AspectRatioBatchSampler
# keeps an incomplete last batch): 3665 iterations of batch 32.
coco_train_images = 117266
coco_epoch_iters = ((coco_train_images + 15) // 16 + 1) // 2
