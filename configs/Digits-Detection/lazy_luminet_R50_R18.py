# A LazyConfig student on the built-in digits set (luminet-lazy-train): detectron2's
# common/models/mask_rcnn_fpn.py model without its mask head, an R-18 trunk with BN trained from
# scratch, FPN 64 and a 256-wide box head as student_R_18_FPN.yaml, the demo's YAML teacher
# (teacher_R_50_FPN.yaml, trained first), LumiNet T 1 weight 4 with a 20-iteration warm-up:
# luminet_R50_R18.yaml as a LazyConfig (without its gradient clipping, which detectron2's lazy
# optimizer config does not have). The test of LazyConfig students trains it at toy sizes.
from detectron2 import model_zoo
from detectron2.config import LazyCall as L
from detectron2.data import (
    DatasetMapper,
    build_detection_test_loader,
    build_detection_train_loader,
    get_detection_dataset_dicts,
)
from detectron2.data import transforms as T
from detectron2.evaluation import COCOEvaluator
from detectron2.modeling.backbone import ResNet
from detectron2.solver import WarmupParamScheduler
from fvcore.common.param_scheduler import MultiStepParamScheduler
from omegaconf import OmegaConf

model = model_zoo.get_config("common/models/mask_rcnn_fpn.py").model
model.backbone.bottom_up.stem.norm = "BN"
model.backbone.bottom_up.stages = L(ResNet.make_default_stages)(depth=18, norm="BN")
model.backbone.bottom_up.freeze_at = 0
model.backbone.out_channels = 64
model.proposal_generator.head.in_channels = 64
model.proposal_generator.anchor_generator.sizes = [[12], [24], [48], [96], [192]]
model.proposal_generator.pre_nms_topk = (1000, 500)
model.proposal_generator.post_nms_topk = (256, 100)
model.roi_heads.num_classes = 10
model.roi_heads.batch_size_per_image = 128
model.roi_heads.box_head.input_shape.channels = 64
model.roi_heads.box_head.fc_dims = [256, 256]
model.roi_heads.box_predictor.input_shape.channels = 256
model.roi_heads.box_predictor.test_topk_per_image = 20
model.roi_heads.mask_in_features = None
model.roi_heads.mask_pooler = None
model.roi_heads.mask_head = None
model.pixel_std = [57.375, 57.120, 58.395]

_fixed_size = [L(T.ResizeShortestEdge)(short_edge_length=128, max_size=128)]
dataloader = OmegaConf.create()
dataloader.train = L(build_detection_train_loader)(
    dataset=L(get_detection_dataset_dicts)(names="digits_det_train"),
    mapper=L(DatasetMapper)(is_train=True, augmentations=_fixed_size, image_format="BGR"),
    total_batch_size=8,
    num_workers=0,
)
dataloader.test = L(build_detection_test_loader)(
    dataset=L(get_detection_dataset_dicts)(names="digits_det_val", filter_empty=False),
    mapper=L(DatasetMapper)(is_train=False, augmentations=_fixed_size, image_format="BGR"),
    num_workers=0,
)
dataloader.evaluator = L(COCOEvaluator)(dataset_name="digits_det_val")

optimizer = model_zoo.get_config("common/optim.py").SGD
optimizer.lr = 0.02
optimizer.weight_decay = 1e-4

train = model_zoo.get_config("common/train.py").train
train.max_iter = 200
train.output_dir = "output/digits/lazy_luminet_r50_r18"
train.eval_period = 0
train.checkpointer = dict(period=100, max_to_keep=2)
train.device = "cpu"
train.seed = 0
lr_multiplier = L(WarmupParamScheduler)(
    scheduler=L(MultiStepParamScheduler)(
        values=[1.0, 0.1], milestones=[160], num_updates=train.max_iter
    ),
    warmup_length=50 / train.max_iter,
    warmup_factor=0.001,
)

distill = dict(
    teacher_config="teacher_R_50_FPN.yaml",  # relative to this file's directory
    teacher_weights="output/digits/teacher_R_50_FPN/model_final.pth",
    losses=["luminet"],
    luminet=dict(temperature=1.0, weight=4.0),
    warmup_iters=20,
)
