"""tools/train_net.py end to end on a small built-in set, in subprocesses: training logs the
distillation loss and prints the COCO table, --eval-only works, --check-teacher refuses a
useless teacher, and a run killed with SIGKILL resumes from its last complete checkpoint."""

import json
import os
import signal
import subprocess
import sys
import time

import pytest
import torch
from detectron2.modeling import build_model

from luminet_det import load_config
from luminet_det.data.digits import generate_digits_detection

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONFIG = os.path.join(ROOT, "configs", "Digits-Detection", "luminet_R50_R18.yaml")


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    base = tmp_path_factory.mktemp("trainnet")
    generate_digits_detection(str(base / "digits_det"), num_train=12, num_val=4, seed=1)
    # a teacher checkpoint with the teacher config's architecture (random values, on disk)
    cfg = load_config(CONFIG)
    from luminet_det.modeling.teacher import load_teacher_cfg

    tcfg = load_teacher_cfg(cfg.MODEL.DISTILL.TEACHER_CONFIG, [], "cpu")
    torch.manual_seed(0)
    weights = str(base / "teacher.pth")
    torch.save({"model": build_model(tcfg).state_dict()}, weights)
    e = dict(os.environ, DETECTRON2_DATASETS=str(base), PYTHONWARNINGS="ignore")
    return {"base": base, "teacher": weights, "env": e}


def _cmd(env, out, *extra, max_iter=4, period=2):
    return [
        sys.executable,
        os.path.join(ROOT, "tools", "train_net.py"),
        "--config-file",
        CONFIG,
        *extra,
        "MODEL.DISTILL.TEACHER_WEIGHTS",
        env["teacher"],
        "OUTPUT_DIR",
        str(out),
        "SOLVER.IMS_PER_BATCH",
        "2",
        "SOLVER.MAX_ITER",
        str(max_iter),
        "SOLVER.STEPS",
        "(1000,)",
        "SOLVER.CHECKPOINT_PERIOD",
        str(period),
        "SOLVER.WARMUP_ITERS",
        "1",
        "MODEL.DISTILL.WARMUP_ITERS",
        "0",
        "DATALOADER.NUM_WORKERS",
        "0",
        "MODEL.ROI_HEADS.BATCH_SIZE_PER_IMAGE",
        "32",
        "MODEL.RPN.POST_NMS_TOPK_TRAIN",
        "64",
    ]


def _rows(out):
    return [json.loads(line) for line in open(os.path.join(out, "metrics.json")) if line.strip()]


def test_train_then_eval_only(env):
    out = env["base"] / "run"
    proc = subprocess.run(_cmd(env, out), env=env["env"], capture_output=True, text=True, cwd=ROOT)
    log = proc.stdout + proc.stderr
    assert proc.returncode == 0, log[-4000:]
    rows = _rows(out)
    losses = [r["loss_luminet"] for r in rows if "loss_luminet" in r]
    assert losses and all(v == v and abs(v) != float("inf") for v in losses)
    assert any("bbox/AP" in r for r in rows)
    assert "copypaste: AP,AP50,AP75,APs,APm,APl" in log
    assert os.path.isfile(out / "model_final.pth")
    ckpt = torch.load(out / "model_final.pth", weights_only=False)
    assert not any(k.startswith("teacher.") for k in ckpt["model"])
    # detectron2 keeps the optimizer and the LR scheduler in the trainer's state
    assert "optimizer" in ckpt["trainer"]["_trainer"]
    assert "LRScheduler" in ckpt["trainer"]["hooks"] and ckpt["iteration"] == 3

    proc = subprocess.run(
        _cmd(env, env["base"] / "eval", "--eval-only")
        + ["MODEL.WEIGHTS", str(out / "model_final.pth")],
        env=env["env"],
        capture_output=True,
        text=True,
        cwd=ROOT,
    )
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-4000:]
    assert "copypaste: AP,AP50,AP75,APs,APm,APl" in proc.stdout + proc.stderr


def test_check_teacher_refuses_a_random_teacher(env):
    proc = subprocess.run(
        _cmd(env, env["base"] / "check", "--check-teacher"),
        env=env["env"],
        capture_output=True,
        text=True,
        cwd=ROOT,
    )
    assert proc.returncode == 2  # a user error: one message, no traceback
    out = proc.stdout + proc.stderr
    assert "below the minimum 1.0" in out and "Traceback" not in out
    assert "below the minimum 1.0" in open(env["base"] / "check" / "log.txt").read()


def test_kill_9_then_resume_continues_from_last_complete_checkpoint(env):
    out = env["base"] / "killed"
    proc = subprocess.Popen(
        _cmd(env, out, max_iter=40, period=2),
        env=env["env"],
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.time() + 300
    while not (out / "model_0000003.pth").exists() and time.time() < deadline:
        time.sleep(0.2)
    assert (out / "model_0000003.pth").exists(), "no checkpoint within 300 s"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    tagged = (out / "last_checkpoint").read_text().strip()
    # the tag names a complete checkpoint; no partial file carries a real name
    saved = torch.load(out / tagged, weights_only=False)
    assert saved["iteration"] >= 3
    assert all(
        not f.endswith(".pth") or f == tagged or torch.load(out / f, weights_only=False)
        for f in os.listdir(out)
        if f.startswith("model_")
    )
    momentum = saved["trainer"]["_trainer"]["optimizer"]["state"]
    assert momentum  # SGD momentum buffers are part of the checkpoint

    resumed = subprocess.run(
        _cmd(env, out, "--resume", max_iter=saved["iteration"] + 3, period=100),
        env=env["env"],
        capture_output=True,
        text=True,
        cwd=ROOT,
    )
    log = resumed.stdout + resumed.stderr
    assert resumed.returncode == 0, log[-4000:]
    assert f"Starting training from iteration {saved['iteration'] + 1}" in log
    iters = [r["iteration"] for r in _rows(out) if "loss_luminet" in r]
    assert max(iters) == saved["iteration"] + 2
    final = torch.load(out / "model_final.pth", weights_only=False)
    assert final["iteration"] == saved["iteration"] + 2
    sched = final["trainer"]["hooks"]["LRScheduler"]
    assert sched["last_epoch"] == saved["trainer"]["hooks"]["LRScheduler"]["last_epoch"] + 2
    # the learning rate continues where it was (past the 1-iteration warm-up: the base LR)
    lrs = [r["lr"] for r in _rows(out) if r.get("iteration", -1) > saved["iteration"] and "lr" in r]
    assert lrs and all(lr == pytest.approx(0.02) for lr in lrs)


def test_check_teacher_passes_and_leaves_the_student_run_unchanged(env):
    """--check-teacher evaluates the teacher that was built with the student: a passing check
    consumes no random numbers the student needs, so the losses equal a run without it."""
    runs = {}
    for name, extra in (("plain", []), ("checked", ["--check-teacher", "--min-teacher-ap", "-1"])):
        out = env["base"] / f"check_{name}"
        proc = subprocess.run(
            _cmd(env, out, *extra, max_iter=2, period=100),
            env=env["env"],
            capture_output=True,
            text=True,
            cwd=ROOT,
        )
        assert proc.returncode == 0, (proc.stdout + proc.stderr)[-4000:]
        runs[name] = [r for r in _rows(out) if "total_loss" in r]
    assert "box AP on digits_det_val" in open(out / "log.txt").read()
    keys = [k for k in runs["plain"][-1] if k.startswith("loss_")]
    assert "loss_luminet" in keys
    assert {k: runs["checked"][-1][k] for k in keys} == {k: runs["plain"][-1][k] for k in keys}


def test_two_cpu_processes_with_num_gpus_and_global_statistics(env):
    """`--num-gpus 2` without CUDA trains with 2 gloo processes through detectron2's launch;
    the "global" teacher statistics are computed before step 0 over the images of both
    processes, kept unchanged by training, saved, and not recomputed by --resume."""
    out = env["base"] / "two_procs"
    images, stats_images, rois = 4, 6, 32
    extra = ["SOLVER.IMS_PER_BATCH", str(images), "MODEL.DISTILL.LUMINET.STATS", "global"]
    extra += ["MODEL.DISTILL.LUMINET.GLOBAL_STATS_IMAGES", str(stats_images)]
    for max_iter, resume in ((2, []), (3, ["--resume"])):
        cmd = _cmd(env, out, "--num-gpus", "2", "--dist-url", "auto", *resume, max_iter=max_iter)
        proc = subprocess.run(cmd + extra, env=env["env"], capture_output=True, text=True, cwd=ROOT)
        assert proc.returncode == 0, (proc.stdout + proc.stderr)[-4000:]
        log = open(out / "log.txt").read()
        state = torch.load(out / "model_final.pth", weights_only=False)["model"]
        # 6 images (3 per process) x 32 sampled ROIs, whatever the iterations
        assert state["logit_losses.luminet.running.count"].item() == stats_images * rois
        if not resume:
            first = state["logit_losses.luminet.running.mean"].clone()
            assert "computed from 192 ROIs" in log
        else:
            assert torch.equal(state["logit_losses.luminet.running.mean"], first)
            assert log.count("computed from 192 ROIs") == 1  # not recomputed on resume
    assert os.path.isfile(out / "log.txt.rank1")  # the second process ran
    assert "training on the CPU (2 process(es))" in log
    assert any("bbox/AP" in r for r in _rows(out))


def _user_error(env, *cmd_extra, config=CONFIG):
    """Run train_net expecting a user error: exit code 2, one message, no traceback."""
    cmd = [sys.executable, os.path.join(ROOT, "tools", "train_net.py"), "--config-file", config]
    proc = subprocess.run(
        cmd + list(cmd_extra), env=env["env"], capture_output=True, text=True, cwd=ROOT
    )
    assert proc.returncode == 2, (proc.stdout + proc.stderr)[-3000:]
    assert "Traceback" not in proc.stderr + proc.stdout, proc.stderr[-3000:]
    return proc.stderr + proc.stdout


def test_the_papers_command_without_coco_says_where_coco_goes(env, tmp_path):
    """The paper's COCO config on a machine without COCO: the datasets are checked before the
    teacher is built (so no download is attempted) and the message says where COCO goes."""
    empty = dict(env, env=dict(env["env"], DETECTRON2_DATASETS=str(tmp_path)))
    out = _user_error(
        empty,
        "OUTPUT_DIR",
        str(tmp_path / "out"),
        config=os.path.join(ROOT, "configs", "COCO-Detection", "luminet_r101_r18.yaml"),
    )
    assert "coco_2017_train" in out and str(tmp_path / "coco") in out
    assert "COCO 2017 is expected under $DETECTRON2_DATASETS/coco/" in out
    assert "cocodataset.org" in out and "Could not download" not in out  # nothing fetched


def test_weights_that_cannot_be_downloaded_or_found_say_how_to_provide_them(env, tmp_path):
    url = "http://127.0.0.1:9/teacher_model.pkl"  # nothing listens on port 9 (discard)
    out = _user_error(env, "MODEL.DISTILL.TEACHER_WEIGHTS", url, "OUTPUT_DIR", str(tmp_path))
    assert f"Could not download {url} (MODEL.DISTILL.TEACHER_WEIGHTS)" in out
    assert "set MODEL.DISTILL.TEACHER_WEIGHTS checkpoints/teacher_model.pkl" in out
    out = _user_error(env, "MODEL.WEIGHTS", "checkpoints/nope.pkl", "OUTPUT_DIR", str(tmp_path))
    assert "MODEL.WEIGHTS 'checkpoints/nope.pkl' does not exist" in out
    assert "tools/convert_torchvision_to_d2.py" in out


def test_retinanet_student_check_teacher_refuses_a_random_retinanet_teacher(env, tmp_path):
    config = os.path.join(ROOT, "configs", "Digits-Detection", "luminet_retinanet_R50_R18.yaml")
    from luminet_det.modeling.teacher import load_teacher_cfg

    cfg = load_config(config)
    tcfg = load_teacher_cfg(cfg.MODEL.DISTILL.TEACHER_CONFIG, [], "cpu", "RetinaNet")
    torch.manual_seed(0)
    weights = str(tmp_path / "retina_teacher.pth")
    torch.save({"model": build_model(tcfg).state_dict()}, weights)
    cmd = [sys.executable, os.path.join(ROOT, "tools", "train_net.py"), "--config-file", config]
    cmd += ["--check-teacher", "MODEL.DISTILL.TEACHER_WEIGHTS", weights, "MODEL.WEIGHTS", ""]
    cmd += ["OUTPUT_DIR", str(tmp_path / "out"), "DATALOADER.NUM_WORKERS", "0"]
    proc = subprocess.run(cmd, env=env["env"], capture_output=True, text=True, cwd=ROOT)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 2, out[-4000:]
    assert "below the minimum 1.0" in out and "Traceback" not in out
    # the teacher checked is a RetinaNet scored by COCO AP on the set's val split
    assert "retinanet" in out.lower()
