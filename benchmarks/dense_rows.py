#!/usr/bin/env python
"""Which anchors a RetinaNet student's logit losses see, and how large the terms are at step 0.

For the built-in RetinaNet pair (configs/Digits-Detection/*retinanet*: the trained R-50-FPN
teacher, the R-18-FPN student at its initialisation), one training batch per seed as the
trainer draws it: the anchors of each kind (valid = not ignored by the matcher, foreground =
matched to a box, relevant = foreground or scored >= SCORE_THRESH_TEST by the teacher), the
student's focal loss, and the unweighted KD and LumiNet terms over the relevant and over the
valid anchors, each also as a multiple of the focal loss at the shipped weight.

    python benchmarks/dense_rows.py [--seeds 3] [--name 2026-12-01-dense-rows]

Needs the trained teacher and the student's starting backbone (benchmarks/run.py --only
retinanet trains them, or tools/train_net.py on their configs). Writes
benchmarks/results/<name>.md and <name>.runs.json.
"""

import argparse
import datetime
import json
import os
import statistics
import sys
import time

sys.path[0] = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
import luminet_det.cli  # noqa: E402,F401  isort: skip  (a command: hides known dependency noise)
import torch  # noqa: E402

from benchmarks.results_io import commit as results_commit  # noqa: E402
from benchmarks.results_io import header  # noqa: E402
from benchmarks.results_io import write_results  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONFIG = os.path.join(ROOT, "configs", "Digits-Detection", "luminet_retinanet_R50_R18.yaml")
KD_CONFIG = os.path.join(ROOT, "configs", "Digits-Detection", "kd_retinanet_R50_R18.yaml")


def measure(seed: int) -> dict:
    from detectron2.checkpoint import DetectionCheckpointer
    from detectron2.data import build_detection_train_loader
    from detectron2.modeling import build_model
    from detectron2.utils.env import seed_all_rng
    from detectron2.utils.events import EventStorage

    from luminet_det import load_config
    from luminet_det.data import CheckedDatasetMapper
    from luminet_det.losses import build_logit_loss

    device = "cuda" if torch.cuda.is_available() else "cpu"
    cfg = load_config(CONFIG, ["SEED", seed, "DATALOADER.NUM_WORKERS", 0, "MODEL.DEVICE", device])
    kd_weight = load_config(KD_CONFIG).MODEL.DISTILL.KD.WEIGHT
    seed_all_rng(seed)  # as default_setup does for the trainer
    model = build_model(cfg)
    DetectionCheckpointer(model).load(cfg.MODEL.WEIGHTS)  # the student's starting backbone
    model.train()
    batch = next(iter(build_detection_train_loader(cfg, mapper=CheckedDatasetMapper(cfg, True))))
    c = cfg.MODEL.RETINANET.NUM_CLASSES
    luminet = build_logit_loss("luminet_sigmoid", num_classes=c, temperature=1.0)
    kd = build_logit_loss("kd_sigmoid", num_classes=c, temperature=1.0)
    with EventStorage(0), torch.no_grad():
        losses, record = model.forward_student(batch)
        teacher = model.teacher_outputs(batch, record)
        focal = float(losses["loss_cls"])
        out = {"seed": seed, "images": len(batch), "focal_loss": focal}
        for kind in ("valid", "foreground", "relevant"):
            rows = record.rows(kind, teacher.logits, model.test_score_thresh)
            out[f"{kind}_anchors"] = int(rows.sum())
            if kind == "foreground":
                continue
            s, t, y = record.logits[rows], teacher.logits[rows], record.labels[rows]
            for name, loss, weight in (
                ("kd", kd, kd_weight),
                ("luminet", luminet, cfg.MODEL.DISTILL.LUMINET.WEIGHT),
            ):
                value = float(loss(s, t, y))
                out[f"{name}_{kind}"] = value
                out[f"{name}_{kind}_x_focal"] = value * weight / focal
    out["weights"] = {"kd": kd_weight, "luminet": cfg.MODEL.DISTILL.LUMINET.WEIGHT}
    return out


def _median(rows, key):
    return statistics.median(r[key] for r in rows)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--name", default=f"{datetime.date.today().isoformat()}-dense-rows")
    parser.add_argument("--results", default=os.path.join(ROOT, "benchmarks", "results"))
    args = parser.parse_args(argv)
    start = time.time()
    rows = []
    for seed in range(args.seeds):
        rows.append(measure(seed))
        print(json.dumps(rows[-1]), flush=True)
    commit = results_commit()
    command = f"python benchmarks/dense_rows.py --seeds {args.seeds} --name {args.name}"
    w = rows[0]["weights"]
    from luminet_det import load_config
    from luminet_det.runio import last_box_ap

    teacher = load_config(CONFIG).MODEL.DISTILL.TEACHER_WEIGHTS
    teacher_ap = (last_box_ap(os.path.dirname(os.path.join(ROOT, teacher))) or {}).get("bbox/AP")
    lines = [
        *header(args.name, commit, command, start),
        (
            f"- teacher: `{teacher}` "
            "(configs/Digits-Detection/teacher_retinanet_R_50_FPN.yaml), box "
            f"AP {teacher_ap:.1f} on the built-in validation set"
            if teacher_ap
            else "- teacher: ?"
        ),
        "",
        "## RetinaNet at step 0: anchors per batch and the size of the logit losses",
        "",
        "The built-in RetinaNet pair (R-50-FPN teacher trained, R-18-FPN student at its "
        "initialisation), one training batch of 8 images per seed as the trainer draws it. "
        "Unweighted terms (T 1) and, in brackets, the term at the shipped weight "
        f"(KD {w['kd']}, LumiNet {w['luminet']}) divided by the student's focal loss. "
        "Medians over seeds; per seed in the runs file.",
        "",
        "| anchors per batch | valid | foreground | relevant |",
        "|---|---|---|---|",
        "| count | "
        + " | ".join(
            f"{_median(rows, f'{k}_anchors'):.0f}" for k in ("valid", "foreground", "relevant")
        )
        + " |",
        "",
        f"Focal loss (student, step 0): {_median(rows, 'focal_loss'):.3f}.",
        "",
        "| term | over the relevant anchors | over every valid anchor |",
        "|---|---|---|",
    ]
    for name in ("kd", "luminet"):
        cells = [
            f"{_median(rows, f'{name}_{kind}'):.3f} "
            f"({_median(rows, f'{name}_{kind}_x_focal'):.1f}×)"
            for kind in ("relevant", "valid")
        ]
        lines.append(f"| {'KD' if name == 'kd' else 'LumiNet'} | {cells[0]} | {cells[1]} |")
    record = {"command": command, "commit": commit, "teacher_box_ap": teacher_ap}
    write_results(args.results, args.name, lines, record, rows)
    return 0


if __name__ == "__main__":
    sys.exit(main())
