# A LazyConfig student (luminet-lazy-train): detectron2's "new baseline" recipe
# (new_baselines/mask_rcnn_R_101_FPN_400ep_LSJ.py: large-scale jitter to 1024 px, SyncBN,
# a 4conv1fc box head, Mask R-CNN) with an R-18 trunk, distilled with LumiNet from that R-101
# new baseline (zoo weights) on its sampled ROIs. The schedule is the paper's detection one
# (8 images per batch, 180k iterations, steps at 120k / 160k; LR 0.01 = the recipe's 0.1 at 64
# images, linearly scaled), not the recipe's 400 epochs; the R-18 trunk starts, as the recipe's
# R-101, from scratch. LumiNet T 1, weight 1, 1k warm-up as configs/COCO-Detection/
# luminet_r101_r18.yaml. NOT run here (no COCO, no GPU). docs/detectors.md, "LazyConfig students".
from detectron2 import model_zoo
from detectron2.config import LazyCall as L
from detectron2.modeling.backbone import ResNet

_recipe = model_zoo.get_config("new_baselines/mask_rcnn_R_101_FPN_400ep_LSJ.py")
dataloader, model, optimizer, train = (
    _recipe.dataloader,
    _recipe.model,
    _recipe.optimizer,
    _recipe.train,
)
lr_multiplier = _recipe.lr_multiplier

# the student: R-18 (basic blocks take no stride_in_1x1), SyncBN as the recipe
model.backbone.bottom_up.stages = L(ResNet.make_default_stages)(depth=18, norm="SyncBN")

# the paper's detection schedule
dataloader.train.total_batch_size = 8
optimizer.lr = 0.01
train.max_iter = 180000
lr_multiplier.scheduler.milestones = [120000, 160000]
lr_multiplier.scheduler.num_updates = train.max_iter
lr_multiplier.warmup_length = 1000 / train.max_iter
train.checkpointer.period = 10000
train.eval_period = 20000
train.output_dir = "output/coco/lsj_luminet_r18_from_r101"

distill = dict(
    teacher_config="new_baselines/mask_rcnn_R_101_FPN_400ep_LSJ.py",
    teacher_weights="zoo",
    losses=["luminet"],
    luminet=dict(temperature=1.0, weight=1.0),
    warmup_iters=1000,
)
