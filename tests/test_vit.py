"""The paper's Table 7 vision-transformer students and their recipe (luminet_det.cls).

tests/fixtures/upstream_vit.json holds what Li et al. 2022b's public code (lkhl/tiny-transformers,
``pycls/models/transformers/``: the networks the paper's appendix A.9 takes its ViT settings from)
computes for DeiT-Ti, PiT-Ti, PVT-Ti and PVTv2-B0 at 224 px and 100 classes, filled with
tests/test_cls_upstream.py's ``fill`` of our state dict; its ``how`` says how it was made.
"""

import json
import math
import os

import pytest
import torch
from test_cls_upstream import fill

from luminet_det.cls import Trainer, build_model, load_config
from luminet_det.cls.models import VIT_MODELS
from luminet_det.cls.solver import build_optimizer, build_scheduler, cosine_lr
from luminet_det.errors import ConfigError

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
UPSTREAM = json.load(open(os.path.join(ROOT, "tests", "fixtures", "upstream_vit.json")))


@pytest.mark.parametrize("arch", sorted(VIT_MODELS))
def test_vit_students_compute_what_the_source_computes(arch):
    torch.set_num_threads(2)
    model = build_model(arch, 100).eval()
    assert sum(p.numel() for p in model.parameters()) == UPSTREAM["params"][arch]
    model.load_state_dict(fill(model.state_dict()))
    x = torch.randn(2, 3, 224, 224, generator=torch.Generator().manual_seed(7))
    with torch.no_grad():
        logits, feat = model(x)
    torch.testing.assert_close(logits, torch.tensor(UPSTREAM["logits"][arch]), rtol=1e-4, atol=5e-5)
    assert feat.shape[0] == 2 and feat.dim() == 2


def test_published_parameter_counts():
    # the PVT networks are their papers': at 1000 classes PVT-Tiny 13.2M (PVT v1 paper, Table 2),
    # PVTv2-B0 3.7M (PVT v2 paper, Table 1); DeiT-Ti and PiT-Ti are timm's own definitions
    published = {"pvt_ti": 13.2, "pvtv2_b0": 3.7}
    for arch, millions in published.items():
        count = sum(p.numel() for p in build_model(arch, 1000).parameters()) / 1e6
        assert abs(count - millions) <= 0.05, (arch, count)


def test_vits_take_small_inputs_and_drop_path():
    # at 32 px (the built-in sets upscaled): every student builds and runs; drop path is live
    x = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    for arch in VIT_MODELS:
        model = build_model(arch, 10, img_size=32, drop_path=0.5)
        assert model(x)[0].shape == (2, 10)
        model.train()
        torch.manual_seed(0)
        a = model(x)[1]  # the features (DeiT-Ti's classifier starts at zero)
        torch.manual_seed(1)
        assert not torch.allclose(a, model(x)[1]), arch  # stochastic depth in training
        model.eval()
        torch.testing.assert_close(model(x)[1], model(x)[1])


def test_cosine_schedule_equals_timm_scheduler_per_epoch():
    from timm.scheduler.cosine_lr import CosineLRScheduler

    cfg = load_config(os.path.join(ROOT, "configs", "CIFAR-100", "vit", "luminet_deit_ti.yaml"))
    s = cfg.SOLVER
    model = torch.nn.Linear(2, 2)
    ours = build_scheduler(s, build_optimizer(s, model))
    ref_opt = torch.optim.AdamW(torch.nn.Linear(2, 2).parameters(), lr=s.LR)
    ref = CosineLRScheduler(
        ref_opt,
        t_initial=s.EPOCHS,
        lr_min=s.MIN_LR,
        warmup_t=s.LR_WARMUP_EPOCHS,
        warmup_lr_init=s.LR_WARMUP_FACTOR * s.LR,
    )
    for epoch in range(s.EPOCHS):  # the trainer steps once after each epoch, as the source
        lr = ours.optimizer.param_groups[0]["lr"]
        assert math.isclose(lr, ref_opt.param_groups[0]["lr"], rel_tol=1e-9), epoch
        ours.optimizer.step()
        ours.step()
        ref.step(epoch + 1)
    # by hand: warm-up from 5e-7, 5e-4 at epoch 20, 2.525e-4 half way, 5e-6 at the end
    assert cosine_lr(0, base=5e-4, epochs=300, min_lr=5e-6, warmup=20, factor=1e-3) == 5e-7
    assert math.isclose(
        cosine_lr(150, base=5e-4, epochs=300, min_lr=5e-6, warmup=20, factor=1e-3), 2.525e-4
    )
    assert math.isclose(
        cosine_lr(300, base=5e-4, epochs=300, min_lr=5e-6, warmup=20, factor=1e-3), 5e-6
    )


def test_adamw_skips_decay_on_biases_norms_and_tokens():
    cfg = load_config(os.path.join(ROOT, "configs", "CIFAR-100", "vit", "kd_deit_ti.yaml"))
    model = build_model("deit_ti", 100)
    opt = build_optimizer(cfg.SOLVER, model)
    assert isinstance(opt, torch.optim.AdamW)
    names = {id(p): n for n, p in model.named_parameters()}
    no_decay = {
        names[id(p)] for g in opt.param_groups if g["weight_decay"] == 0 for p in g["params"]
    }
    decay = {
        names[id(p)] for g in opt.param_groups if g["weight_decay"] == 0.05 for p in g["params"]
    }
    assert no_decay | decay == set(names.values()) and not no_decay & decay
    assert {"net.cls_token", "net.pos_embed", "net.norm.weight", "net.head.bias"} <= no_decay
    assert {
        "net.patch_embed.proj.weight",
        "net.head.weight",
        "net.blocks.0.attn.qkv.weight",
    } <= decay
    assert all(model.get_parameter(n).ndim >= 2 for n in decay - {"net.pos_embed"})
    # the CNN recipe keeps decaying every parameter (mdistiller's SGD)
    sgd = build_optimizer(load_config("", ["METHOD.NAME=ce"]).SOLVER, build_model("resnet8", 10))
    assert len(sgd.param_groups) == 1 and sgd.param_groups[0]["weight_decay"] == 5e-4


def test_vit_student_learns_from_a_cnn_teacher_at_its_own_input_size(tmp_path):
    torch.manual_seed(0)
    teacher = str(tmp_path / "teacher.pth")
    torch.save({"model": build_model("resnet8", 10).state_dict(), "arch": "resnet8"}, teacher)
    cfg = load_config(
        "",
        [
            "DATA.NAME=digits",
            "DATA.NUM_WORKERS=0",
            "DATA.INPUT_SIZE=32",  # the student's input (the digits upscaled)
            "MODEL.STUDENT=pit_ti",
            "MODEL.DROP_PATH=0.1",
            "MODEL.TEACHER=resnet8",
            f"MODEL.TEACHER_WEIGHTS={teacher}",
            "MODEL.TEACHER_MIN_TOP1=0.0",
            "MODEL.TEACHER_INPUT_SIZE=16",  # the teacher's: the data's own size
            "METHOD.NAME=luminet",
            "SOLVER.OPTIMIZER=adamw",
            "SOLVER.LR=0.0005",
            "SOLVER.LR_SCHEDULE=cosine",
            "SOLVER.WEIGHT_DECAY=0.05",
            "SOLVER.NO_DECAY_NORM_BIAS=True",
            "SOLVER.EPOCHS=1",
            f"OUTPUT_DIR={tmp_path / 'run'}",
        ],
    )
    trainer = Trainer(cfg, progress=False)
    seen = []
    # the teacher sees 16 px wherever it runs: training and the teacher check
    trainer.teacher.net.register_forward_pre_hook(lambda m, args: seen.append(args[0].shape))
    x, y = next(iter(trainer.train_loader))
    assert x.shape[-1] == 32
    loss, _, distill = trainer.losses(x, y)
    assert seen == [torch.Size([64, 3, 16, 16])] and distill.item() > 0
    seen.clear()
    trainer.check_teacher(str(tmp_path / "teacher_check.json"))
    assert seen and all(s[-2:] == (16, 16) for s in seen)
    loss.backward()
    assert all(p.grad is None for p in trainer.teacher.parameters())
    assert trainer.student.net.patch_embed.conv.weight.grad.abs().sum() > 0


def test_vit_options_are_checked():
    with pytest.raises(ConfigError, match="pvtv2_b0 needs inputs of at least 32 px, got 16"):
        build_model("pvtv2_b0", 10, img_size=16)
    with pytest.raises(ConfigError, match="MODEL.DROP_PATH=0.1 applies to the vision-transformer"):
        load_config("", ["METHOD.NAME=ce", "MODEL.STUDENT=resnet8", "MODEL.DROP_PATH=0.1"])
    with pytest.raises(ConfigError, match="SOLVER.OPTIMIZER must be one of"):
        load_config("", ["METHOD.NAME=ce", "SOLVER.OPTIMIZER=lamb"])
    with pytest.raises(ConfigError, match="LR_WARMUP_EPOCHS .* belongs to the cosine"):
        load_config("", ["METHOD.NAME=ce", "SOLVER.LR_WARMUP_EPOCHS=5"])
    with pytest.raises(ConfigError, match="not a timm RandAugment policy"):
        load_config("", ["METHOD.NAME=ce", "DATA.RANDAUGMENT=foo-m9"])
    with pytest.raises(ConfigError, match="not on the built-in 'digits' set"):
        load_config(
            "", ["METHOD.NAME=ce", "DATA.NAME=digits", "DATA.RANDAUGMENT=rand-m9-mstd0.5-inc1"]
        )
    with pytest.raises(ConfigError, match="used with DATA.RANDAUGMENT"):
        load_config("", ["METHOD.NAME=ce", "DATA.RANDOM_ERASING=0.25"])


def test_table7_configs_carry_the_a9_recipe():
    for arch in VIT_MODELS:
        for method in ("ce", "kd", "luminet"):
            cfg = load_config(
                os.path.join(ROOT, "configs", "CIFAR-100", "vit", f"{method}_{arch}.yaml")
            )
            s = cfg.SOLVER
            assert (cfg.MODEL.STUDENT, cfg.METHOD.NAME, cfg.MODEL.TEACHER) == (
                arch,
                method,
                "resnet56",
            )
            assert (s.OPTIMIZER, s.LR, s.MIN_LR, s.LR_SCHEDULE, s.EPOCHS) == (
                "adamw",
                5e-4,
                5e-6,
                "cosine",
                300,
            )
            assert (s.WEIGHT_DECAY, s.LR_WARMUP_EPOCHS, s.LR_WARMUP_FACTOR, s.BATCH_SIZE) == (
                0.05,
                20,
                0.001,
                128,
            )
            assert (cfg.MODEL.DROP_PATH, cfg.DATA.INPUT_SIZE, cfg.MODEL.TEACHER_INPUT_SIZE) == (
                0.1,
                224,
                32,
            )
            assert (cfg.DATA.RANDAUGMENT, cfg.DATA.RANDOM_ERASING) == ("rand-m9-mstd0.5-inc1", 0.25)
