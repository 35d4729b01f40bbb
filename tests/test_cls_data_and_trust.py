"""luminet_det.cls on a user's own image folders, the teacher checks before distilling, and
checkpoints read as data."""

import os
import subprocess
import sys

import numpy as np
import pytest
import torch
from PIL import Image

from luminet_det.cls import Trainer, build_model, load_config
from luminet_det.cls.data import build_dataset, folder_classes, num_classes
from luminet_det.errors import ConfigError, TeacherTooWeakError, WeightsUnavailableError
from luminet_det.runio import UnsafeCheckpointError

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _folder_set(root, classes=("circle", "square", "stripes"), per_class=(12, 4), size=20):
    """Tiny synthetic images, one shape per class, as PNG and JPEG in class folders."""
    rng = np.random.default_rng(0)
    for split, n in zip(("train", "val"), per_class):
        for c, name in enumerate(classes):
            folder = os.path.join(root, split, name)
            os.makedirs(folder, exist_ok=True)
            for i in range(n):
                img = rng.integers(0, 40, (size, size, 3)).astype(np.uint8)
                yy, xx = np.mgrid[:size, :size]
                mask = [
                    (yy - size / 2) ** 2 + (xx - size / 2) ** 2 < (size / 3) ** 2,
                    (abs(yy - size / 2) < size / 4) & (abs(xx - size / 2) < size / 4),
                    (xx // 3) % 2 == 0,
                ][c % 3]
                img[mask] = 220
                ext = "png" if i % 2 else "jpg"
                Image.fromarray(img).save(os.path.join(folder, f"{i}.{ext}"))
    return str(root)


def _cfg(out, method, root, extra=()):
    return load_config(
        "",
        [
            "DATA.NAME=folder",
            f"DATA.ROOT={root}",
            "DATA.INPUT_SIZE=16",
            "DATA.NUM_WORKERS=0",
            "MODEL.STUDENT=resnet8",
            "MODEL.TEACHER=resnet20",
            f"METHOD.NAME={method}",
            "SOLVER.BATCH_SIZE=8",
            "SOLVER.EPOCHS=2",
            "SOLVER.LR=0.05",
            "SOLVER.LR_STEPS=[2]",
            f"OUTPUT_DIR={out}",
            *extra,
        ],
    )


def test_own_image_folders_train_a_teacher_and_a_luminet_student(tmp_path):
    root = _folder_set(tmp_path / "shapes")
    assert (
        folder_classes(root) == ["circle", "square", "stripes"] and num_classes("folder", root) == 3
    )
    train = build_dataset("folder", root, train=True, size=16)
    assert len(train) == 36 and train[0][0].shape == (3, 16, 16)
    teacher_cfg = _cfg(tmp_path / "teacher", "ce", root, ["MODEL.STUDENT=resnet20"])
    Trainer(teacher_cfg, progress=False).train()
    best = str(tmp_path / "teacher" / "best.pth")
    cfg = _cfg(tmp_path / "student", "luminet", root, [f"MODEL.TEACHER_WEIGHTS={best}"])
    cfg.defrost()
    cfg.MODEL.TEACHER_MIN_TOP1 = 0.0  # two epochs on 36 images: any teacher will do here
    trainer = Trainer(cfg, progress=False)
    assert trainer.student.fc.out_features == 3
    result = trainer.train()
    assert 0.0 <= result["top1"] <= 100.0 and os.path.isfile(tmp_path / "student" / "best.pth")


def test_folder_errors_say_what_to_fix(tmp_path):
    root = _folder_set(tmp_path / "a")
    os.makedirs(tmp_path / "a" / "val" / "triangle")
    with pytest.raises(ValueError, match=r"only in train \[\], only in val \['triangle'\]"):
        folder_classes(root)
    os.makedirs(tmp_path / "a" / "train" / "triangle")
    with pytest.raises(ValueError, match=r"without images .*'train/triangle', 'val/triangle'"):
        folder_classes(root)
    one = _folder_set(tmp_path / "b", classes=("only",))
    with pytest.raises(ValueError, match="needs at least two"):
        folder_classes(one)
    with pytest.raises(FileNotFoundError, match="one folder per class"):
        folder_classes(str(tmp_path / "nothing"))
    bad = _folder_set(tmp_path / "c")
    broken = os.path.join(bad, "train", "square", "broken.png")
    open(broken, "wb").write(b"not a png")
    data = build_dataset("folder", bad, train=True, size=16)
    index = [i for i, (p, _) in enumerate(data.samples) if p == broken][0]
    with pytest.raises(ValueError, match=r"Could not read image .*broken.png.*replace it"):
        data[index]


def test_a_teacher_at_chance_level_is_refused_with_its_top1(tmp_path):
    root = _folder_set(tmp_path / "shapes")
    torch.manual_seed(0)
    random_teacher = str(tmp_path / "random.pth")
    torch.save({"model": build_model("resnet20", 3).state_dict()}, random_teacher)
    cfg = _cfg(tmp_path / "s", "kd", root, [f"MODEL.TEACHER_WEIGHTS={random_teacher}"])
    cfg.defrost()
    cfg.MODEL.TEACHER_MIN_TOP1 = 99.0  # a random teacher is far below
    with pytest.raises(TeacherTooWeakError, match=r"top-1 \d+\.\d\d % .* minimum 99\.00 %"):
        Trainer(cfg, progress=False).train()
    assert not os.path.isfile(tmp_path / "s" / "last.pth")  # refused before any training


def test_a_teacher_far_below_its_published_top1_is_refused_naming_both_numbers(tmp_path):
    root = _folder_set(tmp_path / "shapes")
    torch.manual_seed(0)
    foreign = str(tmp_path / "foreign.pth")
    torch.save({"model": build_model("resnet20", 3).state_dict()}, foreign)
    cfg = _cfg(tmp_path / "s", "kd", root, [f"MODEL.TEACHER_WEIGHTS={foreign}"])
    cfg.defrost()
    cfg.MODEL.TEACHER_MIN_TOP1 = -1.0  # automatic
    cfg.MODEL.TEACHER_EXPECTED_TOP1 = 90.0
    with pytest.raises(TeacherTooWeakError) as err:
        Trainer(cfg, progress=False).train()
    msg = str(err.value)
    assert "minimum 87.00 %" in msg and "published top-1 90.00 %" in msg and "minus 3 points" in msg
    assert "MODEL.TEACHER_EXPECTED_TOP1" in msg  # how to adapt it for a teacher of your own


def test_teacher_minimum_uses_the_published_top1_where_known():
    from luminet_det.cls.engine import teacher_minimum

    cfg = load_config(os.path.join(ROOT, "configs", "CIFAR-100", "kd", "res32x4_res8x4.yaml"))
    assert cfg.MODEL.TEACHER_EXPECTED_TOP1 == 79.42  # RepDistiller's README, the paper's Table 1
    minimum, why = teacher_minimum(cfg, 100)
    assert minimum == pytest.approx(76.42) and "79.42" in why
    # where nothing is known, twice chance level: 2 % on 100 classes (a foreign checkpoint
    # that loaded by position but reaches 30 % would pass it)
    cfg.MODEL.TEACHER_EXPECTED_TOP1 = -1.0
    assert teacher_minimum(cfg, 100)[0] == pytest.approx(2.0)
    cfg.MODEL.TEACHER_MIN_TOP1 = 0.0  # explicit: no check
    assert teacher_minimum(cfg, 100)[0] == 0.0
    with pytest.raises(ValueError, match="TEACHER_TOP1_TOLERANCE must be >= 0"):
        load_config("", ["MODEL.TEACHER_TOP1_TOLERANCE=-1.0"])


def test_a_missing_release_teacher_says_where_to_get_it_or_how_to_train_one(tmp_path):
    path = "checkpoints/cifar_teachers/resnet32x4_vanilla/ckpt_epoch_240.pth"
    cfg = load_config(
        os.path.join(ROOT, "configs", "CIFAR-100", "luminet", "res32x4_res8x4.yaml"),
        ["DATA.NAME=digits", f"OUTPUT_DIR={tmp_path}"],
    )
    assert cfg.MODEL.TEACHER_WEIGHTS == path  # the configs default to the release's layout
    with pytest.raises(WeightsUnavailableError) as err:
        Trainer(cfg, progress=False)
    msg = str(err.value)
    assert "cifar_teachers.tar" in msg and "megvii-research/mdistiller/releases" in msg
    assert "unpack it in 'checkpoints/'" in msg
    assert "configs/CIFAR-100/teachers/resnet32x4.yaml" in msg
    # the command line prints it as one line, exit status 2, no traceback
    proc = subprocess.run(
        [sys.executable, "-m", "luminet_det.cls", "train", "--config",
         os.path.join(ROOT, "configs", "CIFAR-100", "luminet", "res32x4_res8x4.yaml"),
         "DATA.NAME=digits", f"OUTPUT_DIR={tmp_path}"],
        capture_output=True, text=True, cwd=str(tmp_path),
    )  # fmt: skip
    assert proc.returncode == 2 and proc.stderr.startswith("error: Teacher weights")
    assert "Traceback" not in proc.stderr


class _Payload:
    """Unpickling this calls os.mkdir(marker): code from the file would run (a directory, not
    an open file left for the garbage collector to warn about)."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.mkdir, (self.marker,))


def test_a_checkpoint_that_would_run_code_is_refused_and_runs_nothing(tmp_path):
    marker = tmp_path / "code_ran"
    state = build_model("resnet8", 10).state_dict()
    path = tmp_path / "teacher.pth"
    torch.save({"model": state, "extra": _Payload(str(marker))}, path)
    with pytest.raises(UnsafeCheckpointError) as err:
        build_model("resnet8", 10, str(path))
    assert str(path) in str(err.value) and "MODEL.TRUSTED_CHECKPOINTS" in str(err.value)
    assert not marker.exists()
    # the explicit opt-in for a trusted source unpickles it (and so runs its code)
    build_model("resnet8", 10, str(path), trusted=True)
    assert marker.exists()
    # our own checkpoints are plain data
    torch.save({"model": state, "arch": "resnet8", "metrics": {"top1": 1.0}}, tmp_path / "ok.pth")
    build_model("resnet8", 10, str(tmp_path / "ok.pth"))


def test_digits_hard_corrupts_every_image_and_fixes_the_validation_corruption():
    easy_val = build_dataset("digits", "", train=False)
    hard_val = build_dataset("digits_hard", "", train=False)
    hard_train = build_dataset("digits_hard", "", train=True)
    assert len(hard_val) == len(easy_val) == 360 and len(hard_train) == 1437
    assert num_classes("digits_hard", "") == 10
    x0, y0 = hard_val[0]
    x1, _ = hard_val[0]
    assert torch.equal(x0, x1) and y0 == easy_val[0][1]  # fixed per validation image
    assert not torch.equal(x0, easy_val[0][0])  # but corrupted
    # an occluded square of half the side: a block of the background value before the noise
    assert (x0 - easy_val[0][0]).abs().mean() > 0.3
    a, b = hard_train[0][0], hard_train[0][0]
    assert not torch.equal(a, b)  # training corruptions are drawn anew


def test_autoaugment_is_the_cifar10_policy_on_training_images_only(tmp_path):
    import torchvision.transforms as T

    root = _folder_set(tmp_path / "shapes")
    train = build_dataset("folder", root, train=True, size=16, autoaugment=True)
    names = [type(t).__name__ for t in train.transform.transforms]
    # after the crop and flip, before the tensor conversion (PIL in, PIL out)
    assert names[:4] == ["RandomResizedCrop", "RandomHorizontalFlip", "AutoAugment", "ToTensor"]
    assert train.transform.transforms[2].policy == T.AutoAugmentPolicy.CIFAR10
    x, _ = train[0]
    assert x.shape == (3, 16, 16)
    plain = build_dataset("folder", root, train=True, size=16)
    assert "AutoAugment" not in [type(t).__name__ for t in plain.transform.transforms]
    val = build_dataset("folder", root, train=False, size=16, autoaugment=True)
    assert "AutoAugment" not in [type(t).__name__ for t in val.transform.transforms]
    with pytest.raises(ConfigError, match="not on the built-in 'digits' set"):
        build_dataset("digits", "", train=True, autoaugment=True)
    with pytest.raises(ConfigError, match="DATA.AUTOAUGMENT works on image datasets"):
        load_config("", ["DATA.NAME=digits", "DATA.AUTOAUGMENT=True", "METHOD.NAME=ce"])
    cfg = load_config(os.path.join(ROOT, "configs", "CIFAR-100", "autoaugment", "vgg13_vgg8.yaml"))
    base = load_config(os.path.join(ROOT, "configs", "CIFAR-100", "luminet", "vgg13_vgg8.yaml"))
    assert cfg.DATA.AUTOAUGMENT and not base.DATA.AUTOAUGMENT
    cfg.DATA.AUTOAUGMENT, cfg.OUTPUT_DIR = False, base.OUTPUT_DIR
    assert cfg == base  # the LumiNet recipe of the pair, AutoAugment on
