"""LazyConfig students (luminet-lazy-train): the built-in set's LazyConfig student, at toy sizes,
trains two iterations against a YAML teacher loaded from a file; its checkpoints hold no teacher;
--resume continues; --eval-only evaluates the student alone; --check-teacher refuses a random
teacher; the export is a stock LazyConfig model with the student's predictions; bad distill
sections get clear errors; the shipped .py configs load and build."""

import json
import os

import pytest
import torch
from detectron2.checkpoint import DetectionCheckpointer
from detectron2.config import LazyConfig, instantiate
from tiny import ROOT, save_teacher, tiny_cfg

from luminet_det.errors import ConfigError, TeacherTooWeakError
from luminet_det.lazy import build_lazy_model, distill_cfgnode

CONFIG = os.path.join(ROOT, "configs", "Digits-Detection", "lazy_luminet_R50_R18.py")


@pytest.fixture(scope="module")
def digits(tmp_path_factory):
    """A small built-in set (8 training, 4 validation images), registered under this module's
    own names: the built-in names are bound to $DETECTRON2_DATASETS when luminet_det.data is
    first imported, so a fresh clone (no datasets/digits_det) must not rely on them."""
    from detectron2.data import DatasetCatalog

    from luminet_det.data import generate_digits_detection, register_coco_detection
    from luminet_det.data.digits import digits_paths

    root = str(tmp_path_factory.mktemp("data") / "digits_det")
    generate_digits_detection(root, num_train=8, num_val=4, seed=1)
    for split in ("train", "val"):
        name = f"lazy_student_digits_{split}"
        if name not in DatasetCatalog.list():
            register_coco_detection(name, *digits_paths(root, split))
    return root


@pytest.fixture
def env(digits, tmp_path):
    teacher_cfg = tiny_cfg(num_classes=10)
    teacher_cfg.INPUT.MIN_SIZE_TEST, teacher_cfg.INPUT.MAX_SIZE_TEST = 128, 128
    return save_teacher(tmp_path, teacher_cfg)


def _training_rows(tmp_path):
    rows = [
        json.loads(line) for line in (tmp_path / "run" / "metrics.json").read_text().splitlines()
    ]
    return [r for r in rows if "total_loss" in r]  # not the final evaluation's row


def _args(*opts, flag_values=(), **flags):
    from luminet_det.cli.lazy_train import argument_parser

    argv = ["--config-file", CONFIG, *flag_values]
    argv += [f"--{k.replace('_', '-')}" for k, v in flags.items() if v]
    return argument_parser().parse_args(argv + list(opts))


def _opts(tmp_path, teacher, max_iter=2):
    config, weights = teacher
    return [
        f"train.output_dir={tmp_path / 'run'}",
        f"train.max_iter={max_iter}",
        "train.checkpointer.period=1",
        "train.log_period=1",
        "dataloader.train.total_batch_size=2",
        "model.roi_heads.batch_size_per_image=32",
        f"distill.teacher_config={config}",
        f"distill.teacher_weights={weights}",
        "dataloader.train.dataset.names=lazy_student_digits_train",
        "dataloader.test.dataset.names=lazy_student_digits_val",
        "dataloader.evaluator.dataset_name=lazy_student_digits_val",
    ]


def test_a_lazyconfig_student_trains_resumes_and_evaluates(env, tmp_path):
    from luminet_det.cli.lazy_train import main

    trainer = main(_args(*_opts(tmp_path, env)))
    assert trainer.iter == 2  # iterations 0 and 1 done
    rows = _training_rows(tmp_path)
    assert [r["iteration"] for r in rows] == [0, 1]
    assert all(r["loss_luminet"] >= 0 for r in rows) and "distill_warmup_factor" in rows[-1]
    state = torch.load(tmp_path / "run" / "model_final.pth", weights_only=False)["model"]
    assert not any(k.startswith(("teacher.", "extra_teachers.")) for k in state)
    # --resume continues at the next iteration
    trainer = main(_args(*_opts(tmp_path, env, max_iter=3), resume=True))
    rows = _training_rows(tmp_path)
    assert trainer.iter == 3 and [r["iteration"] for r in rows] == [0, 1, 2]
    # --eval-only: the student alone, through the LazyConfig's evaluator
    results = main(
        _args(
            *_opts(tmp_path, env),
            f"train.init_checkpoint={tmp_path / 'run' / 'model_final.pth'}",
            eval_only=True,
        )
    )
    ap = results["bbox"]["AP"]  # NaN when a 3-iteration student detects nothing
    assert set(results) == {"bbox"} and (ap != ap or 0 <= ap <= 100)


def test_check_teacher_refuses_a_random_teacher(env, tmp_path, capsys):
    from luminet_det.cli.lazy_train import check_teachers, main

    flags = ["--min-teacher-ap", "50"]
    with pytest.raises(SystemExit) as stop:  # the command: the message, no traceback
        main(_args(*_opts(tmp_path, env), flag_values=flags, check_teacher=True))
    assert stop.value.code == 2 and "below the minimum 50.0" in capsys.readouterr().err
    assert not os.path.exists(tmp_path / "run" / "model_final.pth")
    cfg = LazyConfig.apply_overrides(LazyConfig.load(CONFIG), _opts(tmp_path, env))
    with pytest.raises(TeacherTooWeakError, match="Teacher 0 .* box AP"):
        check_teachers(cfg, build_lazy_model(cfg), 50.0)


def test_the_exported_student_is_a_stock_lazyconfig_model(env, tmp_path):
    from luminet_det.cli.export import main as export
    from luminet_det.cli.lazy_train import main

    main(_args(*_opts(tmp_path, env, max_iter=1)))
    out = tmp_path / "export"
    argv = ["--config-file", CONFIG, "--checkpoint", str(tmp_path / "run" / "model_final.pth")]
    assert export(argv + ["--output", str(out), *_opts(tmp_path, env)]) == 0
    cfg = LazyConfig.load(str(out / "student.yaml"))
    assert "distill" not in cfg and cfg.train.init_checkpoint == str(out / "student.pth")
    stock = instantiate(cfg.model).eval()
    DetectionCheckpointer(stock).load(cfg.train.init_checkpoint)
    trained = build_lazy_model(
        LazyConfig.apply_overrides(LazyConfig.load(CONFIG), _opts(tmp_path, env))
    )
    DetectionCheckpointer(trained).load(str(tmp_path / "run" / "model_final.pth"))
    image = torch.rand(3, 128, 128) * 255
    with torch.no_grad():
        mine = trained.eval()([{"image": image}])[0]["instances"]
        theirs = stock([{"image": image}])[0]["instances"]
    torch.testing.assert_close(mine.scores, theirs.scores)


def test_bad_distill_sections_are_refused_clearly(env, tmp_path):
    cfg = LazyConfig.apply_overrides(LazyConfig.load(CONFIG), _opts(tmp_path, env))
    cfg.distill.luminet.tempreature = 2.0
    with pytest.raises(
        ConfigError, match=r"no key distill.luminet.tempreature.*luminet.temperature"
    ):
        distill_cfgnode(cfg)
    cfg = LazyConfig.apply_overrides(LazyConfig.load(CONFIG), _opts(tmp_path, env))
    cfg.distill.losses = ["dkd", "fitnet"]
    with pytest.raises(ConfigError, match="Unknown MODEL.DISTILL.LOSSES \\['fitnet'\\]"):
        distill_cfgnode(cfg)
    cfg = LazyConfig.apply_overrides(LazyConfig.load(CONFIG), _opts(tmp_path, env))
    cfg.model.roi_heads.num_classes = 5
    with pytest.raises(ConfigError, match="class counts differ"):
        build_lazy_model(cfg)
    del cfg.distill
    with pytest.raises(ConfigError, match="has no `distill` section"):
        distill_cfgnode(cfg)


def test_the_shipped_lazyconfig_students_load(tmp_path):
    coco = LazyConfig.load(
        os.path.join(ROOT, "configs", "COCO-Detection", "lsj_luminet_r18_from_r101.py")
    )
    assert coco.distill.teacher_config == "new_baselines/mask_rcnn_R_101_FPN_400ep_LSJ.py"
    assert coco.dataloader.train.total_batch_size == 8 and coco.train.max_iter == 180000
    assert coco.model.backbone.bottom_up.stages.depth == 18
    node = distill_cfgnode(coco)  # every check of the YAML path, no teacher built
    assert node.MODEL.DISTILL.LOSSES == ["luminet"] and node.INPUT.MAX_SIZE_TRAIN == 1024
