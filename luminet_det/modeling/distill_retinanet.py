"""DistillRetinaNet: a RetinaNet student trained against a frozen RetinaNet teacher.

One training step::

    losses, record = model.forward_student(batched_inputs)   # RetinaNet's own forward
    teacher = model.teacher_outputs(batched_inputs, record)  # teacher head, same anchors
    losses.update(model.distillation_losses(record, teacher))

The rows of the logit losses are anchors: teacher and student score the same anchors (same
generator, strides, levels and padded image size, checked when the model is built), and the
anchors that enter are chosen by ``MODEL.DISTILL.DENSE.ANCHORS`` from the student's anchor
labels. The losses are the sigmoid forms of LumiNet and KD (luminet_det/losses/dense.py).
"""

from __future__ import annotations

import contextlib
from typing import Dict, Iterator, List, Mapping, Optional, Sequence, Tuple

import torch
from detectron2.config import configurable
from detectron2.layers import cat
from detectron2.modeling import META_ARCH_REGISTRY, RetinaNet
from detectron2.modeling.meta_arch.dense_detector import permute_to_N_HWA_K
from torch import nn

from luminet_det.config import DENSE_ANCHORS, DENSE_LOGIT_LOSSES, check_distill_config
from luminet_det.errors import ConfigError
from luminet_det.losses import LogitLoss

from ..precision import to_float32
from .crosskd import subnet_split
from .distiller import Distiller, current_storage, distillation_from_config, float32_losses
from .records import DenseRecord, TeacherOutputs
from .teacher import teacher_images

__all__ = ["DistillRetinaNet", "check_anchors_align"]


def check_anchors_align(student: RetinaNet, teacher: RetinaNet, name: str = "teacher") -> None:
    """Raise ValueError unless ``teacher`` scores exactly the anchors of ``student``: the same
    head input levels, anchor strides, cell anchors (sizes and aspect ratios), offset and
    image padding (size divisibility), and the same class count."""
    s, t = student.anchor_generator, teacher.anchor_generator
    differ = []
    if len(student.head_in_features) != len(teacher.head_in_features):
        differ.append(
            f"head levels {student.head_in_features} vs {teacher.head_in_features} "
            "(MODEL.RETINANET.IN_FEATURES)"
        )
    if list(s.strides) != list(t.strides):
        differ.append(f"anchor strides {list(s.strides)} vs {list(t.strides)}")
    if s.offset != t.offset:
        differ.append(f"MODEL.ANCHOR_GENERATOR.OFFSET {s.offset} vs {t.offset}")
    s_cells, t_cells = list(s.cell_anchors), list(t.cell_anchors)
    if len(s_cells) != len(t_cells) or not all(
        a.shape == b.shape and torch.allclose(a, b) for a, b in zip(s_cells, t_cells)
    ):
        differ.append(
            f"cell anchors ({s.num_cell_anchors} vs {t.num_cell_anchors} per level; "
            "MODEL.ANCHOR_GENERATOR.SIZES / ASPECT_RATIOS)"
        )
    s_div, t_div = student.backbone.size_divisibility, teacher.backbone.size_divisibility
    if s_div != t_div:
        differ.append(f"backbone size divisibility {s_div} vs {t_div} (padded image sizes)")
    if student.num_classes != teacher.num_classes:
        differ.append(f"MODEL.RETINANET.NUM_CLASSES {student.num_classes} vs {teacher.num_classes}")
    if differ:
        raise ConfigError(
            f"The {name}'s anchors do not align with the student's, so their per-anchor logits "
            "cannot be compared row by row: " + "; ".join(differ) + " (student vs teacher). Give "
            "both the same MODEL.ANCHOR_GENERATOR, MODEL.RETINANET.IN_FEATURES and FPN levels."
        )


@META_ARCH_REGISTRY.register()
class DistillRetinaNet(Distiller, RetinaNet):
    """A RetinaNet student distilled from a frozen RetinaNet teacher (beyond the paper, which
    covers Faster R-CNN only).

    In training the student runs exactly as :class:`RetinaNet` (:meth:`forward_student`);
    the teachers then run, frozen and under ``no_grad``, on the same images (their own pixel
    normalisation and channel order) and their heads score the same anchors
    (:meth:`teacher_outputs`). The rows of the logit losses are the anchors chosen by
    ``anchors`` from the student's anchor labels; each loss is the per-anchor sigmoid form of
    its method (``"luminet"`` -> :func:`~luminet_det.losses.sigmoid_luminet_loss`, ``"kd"`` ->
    :func:`~luminet_det.losses.sigmoid_kd_loss`, divided by the batch's foreground anchors,
    LumiNet's also averaged over the classes: luminet_det/losses/dense.py says why; ``"dist"``
    -> :func:`~luminet_det.losses.sigmoid_dist_loss`). ``"crosskd"`` runs the student's head
    features through the teacher's remaining head layers (:mod:`.crosskd`). In inference the
    student equals a RetinaNet with the same weights.
    """

    @configurable
    def __init__(
        self,
        *,
        teacher: RetinaNet,
        extra_teachers: Sequence[RetinaNet] = (),
        logit_losses: Optional[Mapping[str, LogitLoss]] = None,
        feature_losses: Optional[Mapping[str, nn.Module]] = None,
        loss_weights: Optional[Mapping[str, float]] = None,
        warmup_iters: int = 0,
        teacher_dtype: str = "float32",
        anchors: str = "relevant",
        **kwargs,
    ):
        """
        Args:
            teacher (RetinaNet): the teacher with its weights loaded; frozen here.
            extra_teachers (sequence[RetinaNet]): further teachers of an ensemble, whose anchor
                logits are averaged with the first's.
            logit_losses (dict[str, LogitLoss]): name -> sigmoid logit loss, called as
                ``loss(student (M, K), teacher (M, K), labels (M,))`` on the chosen anchors.
            feature_losses (dict[str, nn.Module]): name -> ``module(student_features,
                teacher_features)`` on the backbone outputs.
            loss_weights (dict[str, float]): name -> weight >= 0, one per loss above.
            warmup_iters (int): >= 0; weights ramp as ``min(iter / warmup_iters, 1)``.
            teacher_dtype (str): "float32", "bfloat16" or "float16": the dtype of the teachers'
                forward (luminet_det/precision.py).
            anchors (str): which anchors enter the logit losses: "relevant", "valid" or
                "foreground" (:meth:`~luminet_det.modeling.records.DenseRecord.rows`; "relevant"
                uses the teacher's scores against ``test_score_thresh``).
            kwargs: the arguments of :class:`RetinaNet`.
        """
        super().__init__(**kwargs)
        if anchors not in DENSE_ANCHORS:
            raise ValueError(f"anchors must be one of {list(DENSE_ANCHORS)}, got {anchors!r}.")
        self.anchors = anchors
        self._init_distillation(
            teacher=teacher,
            extra_teachers=extra_teachers,
            logit_losses=logit_losses,
            feature_losses=feature_losses,
            loss_weights=loss_weights,
            warmup_iters=warmup_iters,
            teacher_dtype=teacher_dtype,
        )
        for i, t in enumerate(self.teachers):
            if not isinstance(t, RetinaNet):
                raise ConfigError(
                    f"DistillRetinaNet's teachers must be RetinaNet models, got "
                    f"{type(t).__name__} (teacher {i})."
                )
            check_anchors_align(self, t, "teacher" if i == 0 else f"ensemble teacher {i}")
        if self.crosskd is not None:
            if self.extra_teachers:
                raise ConfigError(
                    "CrossKD runs the student's features through one teacher's head: use it "
                    "without MODEL.DISTILL.ENSEMBLE_CONFIGS."
                )
            self.crosskd.check_heads(self.head, self.teacher.head)

    @property
    def crosskd(self):
        """The CrossKD module when "crosskd" is configured, else None."""
        return self.feature_losses["crosskd"] if "crosskd" in self.feature_losses else None

    @classmethod
    def from_config(cls, cfg):
        check_distill_config(cfg)
        ret = super().from_config(cfg)
        ret.update(
            distillation_from_config(
                cfg,
                ret["backbone"],
                DENSE_LOGIT_LOSSES,
                cfg.MODEL.RETINANET.NUM_CLASSES,  # sigmoid: no background column
                registry_name=lambda name: f"{name}_sigmoid",
            ),
            anchors=cfg.MODEL.DISTILL.DENSE.ANCHORS,
        )
        return ret

    # ------------------------------------------------------------------------------ forward
    def forward_student(
        self, batched_inputs: List[Dict[str, torch.Tensor]]
    ) -> Tuple[Dict[str, torch.Tensor], DenseRecord]:
        """The student's training forward, exactly RetinaNet's, and what distillation needs
        of it: features, every anchor's class logits and the anchor matcher's labels."""
        assert self.training, "forward_student is the training forward: call model.train()"
        with self._recording() as recorded, self._holding(self.head) as held:
            losses = self._stock_forward(batched_inputs)
        logits = self._anchor_logits(recorded["predictions"][0])
        labels = torch.stack(recorded["labels"])
        assert labels.shape == logits.shape[:2], f"{labels.shape} vs {logits.shape}"
        images = recorded.get("images")
        return losses, DenseRecord(recorded["features"], logits, labels, images, held or None)

    @torch.no_grad()
    def teacher_outputs(
        self, batched_inputs: List[Dict[str, torch.Tensor]], record: DenseRecord
    ) -> TeacherOutputs:
        """The first teacher's backbone features and, when logit losses are configured, the
        teachers' mean class logits (N, R, K) on every anchor."""
        with_logits = bool(self.logit_losses) or self.crosskd is not None
        features, logits, deltas, hold = None, [], None, None
        for t in self.teachers if with_logits else [self.teacher]:
            with self.teacher_precision(), self._holding(t.head, t is self.teacher) as held:
                images = teacher_images(
                    t, self.input_format, batched_inputs, record.images, self.backbone
                )
                t_features = t.backbone(images.tensor)
                head_out = (
                    t.head([t_features[f] for f in t.head_in_features]) if with_logits else None
                )
            if held:
                hold = to_float32(held)
                deltas = cat([permute_to_N_HWA_K(to_float32(x), 4) for x in head_out[1]], dim=1)
            t_features = to_float32(t_features)
            features = t_features if features is None else features
            if with_logits:
                logits.append(self._anchor_logits(to_float32(head_out[0])))
                if logits[-1].shape != record.logits.shape:
                    raise ValueError(
                        f"The teacher scored {tuple(logits[-1].shape)} (images, anchors, "
                        f"classes) where the student has {tuple(record.logits.shape)}: their "
                        "padded image sizes or feature levels differ (INPUT sizes, "
                        "size divisibility)."
                    )
        stage_logits = [torch.stack(logits).mean(0)] if with_logits else None
        return TeacherOutputs(features, stage_logits, deltas=deltas, hold=hold)

    def distillation_losses(
        self, record: DenseRecord, teacher: TeacherOutputs
    ) -> Dict[str, torch.Tensor]:
        """``loss_<name>`` for every configured loss, weighted and warmed up; the logit losses
        on the anchors chosen by ``self.anchors``.

        Raises:
            FloatingPointError: NaN or Inf in the teacher's logits or in a loss.
        """
        storage = current_storage()
        terms, inputs = {}, []
        with float32_losses(record.logits):
            if self.logit_losses:
                inputs.append(("the teacher's anchor logits", teacher.logits))
                rows = record.rows(self.anchors, teacher.logits, self.test_score_thresh)
                # one read of the selection's size (a boolean index per tensor would be three)
                index = rows.flatten().nonzero().squeeze(1)
                k = record.logits.shape[-1]
                student = record.logits.reshape(-1, k).index_select(0, index)
                t_logits = teacher.logits.reshape(-1, k).index_select(0, index)
                labels = record.labels.flatten().index_select(0, index)
                if storage is not None:
                    storage.put_scalar("distill_anchors", float(student.shape[0]))
                for name, loss in self.logit_losses.items():
                    terms[name] = loss(student, t_logits, labels)
            for name, module in self.feature_losses.items():
                if name == "crosskd":
                    terms[name] = self._crosskd(record, teacher)
                else:
                    terms[name] = module(to_float32(record.features), teacher.features)
        return self._finish_losses(terms, inputs=inputs)

    def _crosskd(self, record: DenseRecord, teacher: TeacherOutputs) -> torch.Tensor:
        """CrossKD's term (modeling/crosskd.py): the student's held head features through the
        teacher's remaining head layers, against the teacher's predictions, on every anchor
        the focal loss trains on, ÷ the batch's foreground anchors."""
        levels = [record.features[f] for f in self.head_in_features]
        anchors = cat([a.tensor for a in self.anchor_generator(levels)])
        valid = record.labels >= 0
        normaliser = (valid & (record.labels < self.num_classes)).sum().clamp_min(1).float()
        return self.crosskd(
            to_float32(record.hold),
            teacher.hold,
            self.teacher.head,
            teacher.logits,
            teacher.deltas,
            anchors,
            valid,
            normaliser,
            self.box2box_transform,
            self.num_classes,
        )

    @contextlib.contextmanager
    def _holding(self, head: nn.Module, active: bool = True) -> Iterator[Dict[str, list]]:
        """While active and CrossKD is configured: collect, per FPN level, the inputs of the
        activations that follow the reused convolution of ``head``'s two subnets (the
        features CrossKD feeds on, after any norm, before the ReLU)."""
        held: Dict[str, list] = {}
        handles = []
        if active and self.crosskd is not None:
            for key, subnet in (("cls", head.cls_subnet), ("box", head.bbox_subnet)):
                index, _ = subnet_split(subnet, self.crosskd.k)
                held[key] = []
                handles.append(
                    subnet[index].register_forward_pre_hook(
                        lambda m, inputs, key=key: held[key].append(inputs[0])
                    )
                )
        try:
            yield held
        finally:
            for h in handles:
                h.remove()

    def _anchor_logits(self, per_level: List[torch.Tensor]) -> torch.Tensor:
        """Per-level head outputs (N, A*K, H, W) -> (N, R, K), RetinaNet's anchor order."""
        return cat([permute_to_N_HWA_K(x, self.num_classes) for x in per_level], dim=1)

    @contextlib.contextmanager
    def _recording(self) -> Iterator[Dict[str, object]]:
        """Record, during one student forward, the backbone features and head outputs
        (forward hooks) and the anchor labels (the model's ``label_anchors``, wrapped on this
        instance for the duration)."""
        recorded: Dict[str, object] = {}

        def keep(key):
            def hook(module, inputs, output):
                recorded[key] = output

            return hook

        handles = [
            self.backbone.register_forward_hook(keep("features")),
            self.head.register_forward_hook(keep("predictions")),
        ]
        label_anchors = self.label_anchors

        def labelled(anchors, gt_instances):
            labels, boxes = label_anchors(anchors, gt_instances)
            recorded["labels"] = labels
            return labels, boxes

        self.label_anchors = labelled
        preprocess = self.preprocess_image

        def preprocessed(batched_inputs):
            recorded["images"] = images = preprocess(batched_inputs)
            return images

        self.preprocess_image = preprocessed
        try:
            yield recorded
        finally:
            for h in handles:
                h.remove()
            self.__dict__.pop("label_anchors", None)
            self.__dict__.pop("preprocess_image", None)
        assert {"features", "predictions", "labels"} <= set(recorded), f"{recorded.keys()}"
