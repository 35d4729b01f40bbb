"""benchmarks/run.py --quick keeps the benchmark code working (numbers are not asserted:
timings belong in benchmarks/results, never in tests)."""

import json
import os
import subprocess
import sys

import pytest


def test_bench_quick_writes_report_and_chart(tmp_path, root_dir):
    scratch = tmp_path / "tmp"  # the toy runs' temporary folder is made here, then removed
    scratch.mkdir()
    proc = subprocess.run(
        [
            sys.executable,
            os.path.join(root_dir, "benchmarks", "run.py"),
            "--quick",
            "--results",
            str(tmp_path),
            "--name",
            "q",
        ],
        capture_output=True,
        text=True,
        cwd=root_dir,
        env=dict(os.environ, PYTHONWARNINGS="ignore", TMPDIR=str(scratch)),
    )
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-4000:]
    assert [p.name for p in scratch.iterdir() if p.name.startswith("luminet_bench_")] == []
    md = open(tmp_path / "q.md").read()
    for section in (
        "Cost of the losses alone",
        "Cost of one training step",
        "built-in detection set, Faster R-CNN R-50-FPN → R-18-FPN, paired seeds",
        "Mask R-CNN R-50-FPN → R-18-FPN, paired seeds",
        "Cascade R-CNN R-50-FPN teacher → Faster R-CNN R-18-FPN, paired seeds",
        "RetinaNet R-50-FPN → R-18-FPN, paired seeds",
        "built-in classification set",
        "Where the perception statistics come from",
        "hard built-in classification set, resnet8 student, paired seeds",
        "hard built-in classification set, PVTv2-B0 (32 px; the teacher sees 16 px) student",
        "an unseen image-folder set, resnet8 student, paired seeds",
        "Transfer: linear probing, clean built-in digits → hard set",
    ):
        assert section in md, section
    for row in (
        "| LumiNet |",
        "| KD |",
        "| DKD |",
        "| logitstd |",
        "| student alone |",
        "| LumiNet+ReviewKD |",
        "| teacher alone |",
        "| batch |",
        "| sync |",
        "| global |",
        "| one process's batch (1 image) |",  # --quick: 2 images over 2 processes
        "| 2 processes synced (2 images) |",
    ):
        assert row in md, row
    assert os.path.getsize(tmp_path / "q.png") > 1000
    assert "LumiNet minus each method, per seed (mask AP points)" in md
    runs = json.load(open(tmp_path / "q.runs.json"))["runs"]
    tune = [
        (r["phase"], r["set"], r["temperature"], r["weight"], r["seed"])
        for r in runs
        if "phase" in r and "set" in r
    ]
    assert tune[:2] == [  # --quick: the shipped weight and 4 times it, on seed 0
        ("tuning", "clshard", 8.0, 5625.0, 0),
        ("tuning", "clshard", 8.0, 22500.0, 0),
    ]
    # then seed 1 of both sets at the shipped values, and at the other ones if they were chosen
    confirm = {(s, w) for _, s, _, w, seed in tune[2:] if seed == 1}
    assert len(tune[2:]) == len(confirm) and confirm in [
        {(s, w) for s in ("clshard", "clsnew") for w in weights}
        for weights in ([5625.0], [5625.0, 22500.0])
    ]
    assert "Tuning LumiNet's T and weight on one set, confirmed on another" in md
    # dettune --quick: the shipped values and one other per method on seed 0, then the chosen
    # values (and LumiNet's shipped ones) on fresh seed 1
    dettune = [r for r in runs if "phase" in r and "set" not in r]
    assert [(r["phase"], r["method"], r["seed"]) for r in dettune[:4]] == [
        ("tuning", m, 0) for m in ("LumiNet", "LumiNet", "DKD", "DKD")
    ]
    assert dettune[0]["MODEL.DISTILL.LUMINET.TEMPERATURE"] == 1.0
    assert "MODEL.DISTILL.LUMINET.TEMPERATURE 4.0" in dettune[1]["command"]
    assert {(r["method"], r["seed"]) for r in dettune[4:]} == {("LumiNet", 1), ("DKD", 1)}
    assert "LumiNet vs DKD at equal tuning" in md
    for r in dettune:
        assert r["command"].startswith("python tools/train_net.py --config-file configs/")
    cls = [r for r in runs if not {"group", "sweep", "phase"} & set(r) and r["set"] != "probe"]
    three = ("student alone", "KD", "LumiNet")
    hard = {"DKD", "logitstd", "DIST", *three, *(f"{m}, AdamW" for m in three)}
    aa = ("KD + AutoAugment", "LumiNet + AutoAugment")
    assert {(r["set"], r["method"]) for r in cls} == {("clshard", m) for m in hard} | {
        (s, m) for s in ("clsvit", "clsnew") for m in three
    } | {("clsnew", m) for m in (*aa, "LumiNet, weight 1591")} | {
        ("clsvit", "LumiNet, weight 1778.8")
    }
    assert "| LumiNet | " in md.split("AutoAugment on minus off, per seed")[1]
    # the ViT recipe's optimizer on the resnet8 student: every SOLVER key of its base config
    adamw = [r for r in cls if r["set"] == "clshard" and r["method"].endswith(", AdamW")]
    for key in ("OPTIMIZER=adamw", "LR=0.0005", "LR_SCHEDULE=cosine", "WEIGHT_DECAY=0.05"):
        assert all(f"SOLVER.{key}" in r["command"] for r in adamw), key
    assert "| model | top-1 (%) | ECE (%) | mean confidence − top-1 | FPR95 (%) |" in md
    new = [r for r in cls if r["set"] == "clsnew"]
    assert all(
        "DATA.NAME=folder" in r["command"] and "DATA.INPUT_SIZE=16" in r["command"] for r in new
    )
    assert {r["method"] for r in new if "DATA.AUTOAUGMENT=True" in r["command"]} == set(aa)
    assert all(r["command"].startswith("python -m luminet_det.cls train --config") for r in cls)
    # transfer: each student trained on the clean digits, then its last.pth probed on the hard set
    probes = [r for r in runs if r.get("set") == "probe"]
    assert {r["method"] for r in probes} == set(three)
    probe_cmd = "python -m luminet_det.cls probe --config configs/Digits-Classification/probe_"
    for r in probes:
        assert r["probe_command"].startswith(probe_cmd) and "/last.pth" in r["probe_command"]
        assert 0.0 <= r["probe_top1"] <= 100.0
    assert "| teacher resnet56 |" in md.split("Transfer: linear probing")[1]
    det = {(r["group"], r["method"]) for r in runs if "group" in r}
    methods = {"student alone", "KD", "DKD", "logitstd", "DIST", "LumiNet", "LumiNet+ReviewKD"}
    assert det == {("det", m) for m in methods} | {
        ("mask", "student alone"),
        ("mask", "LumiNet"),
        ("cascade", "student alone"),
        ("cascade", "LumiNet"),
        ("cascade", "KD"),
        ("cascade", "LumiNet, mean of probabilities"),
        ("cascade", "KD, mean of probabilities"),
        ("retinanet", "student alone"),
        ("retinanet", "KD"),
        ("retinanet", "DIST"),
        ("retinanet", "CrossKD"),
        ("retinanet", "LumiNet"),
        ("retinanet", "KD, all anchors"),
        ("retinanet", "LumiNet, all anchors"),
    } | {("stats", f"LumiNet, STATS {m}") for m in ("batch", "sync", "global", "running")} | {
        ("lazy", m) for m in ("student alone", "KD", "LumiNet")
    }
    assert "Sensitivity to the batch size and the temperature" in md
    assert os.path.getsize(tmp_path / "q-sweeps.png") > 1000
    points = {(r["sweep"], r["method"], r["value"]) for r in runs if "sweep" in r}
    assert points == {  # --quick: two batch sizes, one temperature
        (s, m, v) for m in ("KD", "LumiNet") for s, v in [("batch", 32), ("batch", 64), ("tau", 4)]
    }
    for r in runs:
        if "group" in r:  # rerunnable from the repository, with its final box AP
            assert r["command"].startswith("python tools/train_net.py --config-file configs/")
            assert "bbox/AP" in r and ("segm/AP" in r) == (r["group"] == "mask")


def test_moment_errors_by_hand():
    import torch

    from benchmarks.stats_modes import moment_errors

    # one column, rows 0 | 2: all rows have mean 1 and (biased) std 1
    per_batch = [torch.tensor([[0.0]]), torch.tensor([[2.0]])]
    mean_err, std_err, sizes = moment_errors(per_batch, 1)
    assert mean_err == [1.0, 1.0] and std_err == [1.0, 1.0] and sizes == [1, 1]
    # both batches pooled are all the rows: no error
    assert moment_errors(per_batch, 2) == ([0.0], [0.0], [2])
    # rows 0, 0 | 3, 1: mean 1, std sqrt(1.5); batch 2 has mean 2 and std 1
    per_batch = [torch.tensor([[0.0], [0.0]]), torch.tensor([[3.0], [1.0]])]
    mean_err, std_err, _ = moment_errors(per_batch, 1)
    s = 1.5**0.5
    assert mean_err == pytest.approx([1 / s, 1 / s])
    assert std_err == pytest.approx([1.0, (s - 1) / s])


def test_paired_interval_by_hand():
    from benchmarks.common import paired

    # differences 1, 2, 3: mean 2, sample std 1, t(0.975, 2) = 4.303
    p = paired([1.0, 2.0, 3.0])
    assert p["mean"] == 2.0 and p["half"] == pytest.approx(4.303 / 3**0.5)
    assert paired([0.5])["half"] != paired([0.5])["half"]  # one seed: no interval (nan)


def test_probe_table_takes_luminet_minus_each_method_per_seed():
    from benchmarks.probe import LinearProbe

    def rows(*probe):
        return [{"source_top1": 95.0, "probe_top1": p} for p in probe]

    table = LinearProbe(
        {"student alone": rows(60.0, 64.0), "KD": rows(70.0, 68.0), "LumiNet": rows(70.0, 66.0)},
        {"source_top1": 98.0, "probe_top1": 75.0},
    )
    md = "\n".join(table.markdown())
    assert "| teacher resnet56 | 98.0 | 75.0 | |" in md
    assert "| LumiNet | 95.0 ± 0.0 | 68.0 ± 2.8 | 70.0, 66.0 |" in md
    # LumiNet - alone per seed: 10, 2 -> mean 6, sample std 5.657, half = 12.706 * 5.657 / sqrt 2
    assert "| student alone | +6.00 | [-44.82, +56.82] | 2 of 2 |" in md
    # LumiNet - KD per seed: 0, -2 -> no seed where LumiNet is higher (a tie is not a win)
    assert "| KD | -1.00 | [-13.71, +11.71] | 0 of 2 |" in md
    assert table.chart()[1]["KD"] == [70.0, 68.0]


def test_a_group_refuses_a_teacher_below_its_student_alone():
    from benchmarks.det_paired import GROUPS, _check_teacher_beats

    group = GROUPS["lazy"]
    with pytest.raises(RuntimeError, match=r"box AP 7.3, not above the student alone's 9.2"):
        _check_teacher_beats(group, {"bbox/AP": 7.26}, [{"bbox/AP": 9.0}, {"bbox/AP": 9.5}])
    _check_teacher_beats(group, {"bbox/AP": 46.1}, [{"bbox/AP": 9.0}])  # passes


def test_results_say_how_their_teacher_was_trained_from_its_saved_config(tmp_path, root_dir):
    from detectron2.config import LazyConfig

    from benchmarks.det_paired import GROUPS, PairedDetection
    from benchmarks.results_io import recipe
    from luminet_det import load_config

    digits = os.path.join(root_dir, "configs", "Digits-Detection")
    yaml_run, lazy_run = tmp_path / "yaml", tmp_path / "lazy"
    yaml_run.mkdir()
    lazy_run.mkdir()
    cfg = load_config(os.path.join(digits, "student_R_18_FPN.yaml"))
    cfg.SOLVER.MAX_ITER, cfg.SOLVER.STEPS, cfg.SOLVER.BASE_LR = 450, (400, 5000), 0.01
    (yaml_run / "config.yaml").write_text(cfg.dump())  # what detectron2 saves in OUTPUT_DIR
    assert (
        recipe(str(yaml_run)) == "450 iterations of 8 images at LR 0.01 (÷10 at 400), from scratch"
    )
    # a LazyConfig run's dump names Python objects (ShapeSpec): read all the same
    LazyConfig.save(
        LazyConfig.load(os.path.join(digits, "lazy_teacher_R_50_FPN.py")),
        str(lazy_run / "config.yaml"),
    )
    assert "!!python/object" in (lazy_run / "config.yaml").read_text()
    assert recipe(str(lazy_run)) == (
        "600 iterations of 8 images at LR 0.02, from "
        "output/digits/teacher_R_50_FPN/model_final.pth"
    )
    unknown = recipe(str(tmp_path))
    assert unknown.startswith("recipe unknown (no ") and unknown.endswith("/config.yaml)")
    table = PairedDetection(
        GROUPS["det"],
        {"student alone": [{"bbox/AP": 9.0}], "LumiNet": [{"bbox/AP": 25.0}]},
        {"bbox/AP": 46.1},
        provenance=["teacher_R_50_FPN.yaml: " + recipe(str(yaml_run))],
    )
    md = "\n".join(table.markdown())
    assert "Trained: teacher_R_50_FPN.yaml: 450 iterations of 8 images" in md
    # the det pair's report says LumiNet's weight was tuned on its seed 0; other groups none
    assert "One trial per method (the shipped configs); LumiNet's weight 4 was chosen" in md
    mask = PairedDetection(GROUPS["mask"], {"LumiNet": [{"bbox/AP": 25.0}]}, {"bbox/AP": 52.5})
    assert "(the shipped configs), none tuned on these runs." in "\n".join(mask.markdown())


def test_the_tuning_table_marks_the_choice_and_compares_it_with_the_shipped_values():
    from benchmarks.cls_tune import SHIPPED, Tuning

    grid = {(8.0, 5625.0): {"top1": 80.0, "ece": 3.0}, (16.0, 1406.25): {"top1": 82.5, "ece": 4.0}}
    confirm = {
        "clsnew": {
            "T 8, weight 5625 (shipped)": [
                {"top1": 90.0, "ece": 3.0, "confidence": 88.0},
                {"top1": 92.0, "ece": 2.0, "confidence": 91.0},
            ],
            "T 16, weight 1406.25 (chosen)": [
                {"top1": 91.0, "ece": 2.5, "confidence": 90.0},
                {"top1": 91.0, "ece": 3.5, "confidence": 90.0},
            ],
        }
    }
    teachers = {"clshard": {"top1": 90.6}, "clsnew": {"top1": 99.3}}
    table = Tuning(grid, (16.0, 1406.25), confirm, teachers)
    md = "\n".join(table.markdown())
    assert SHIPPED == (8.0, 5625.0)
    assert "| 8 |  | 80.00 / 3.0 (shipped) |" in md  # a trial not run is left empty
    assert "| 16 | 82.50 / 4.0 (chosen) |  |" in md
    assert "Chosen: T 16, weight 1406.25." in md
    # chosen minus shipped per seed, top-1: +1, -1 (mean 0, 1 win of 2); shipped minus chosen,
    # ECE: +0.5, -1.5 (mean -0.5; the chosen values' ECE lower on 1 seed of 2)
    assert "| T 8, weight 5625 (shipped) | +0.00 | [-12.71, +12.71] | 1 of 2 |" in md
    assert "| T 8, weight 5625 (shipped) | -0.50 | [-13.21, +12.21] | 1 of 2 |" in md
    assert (
        "| T 16, weight 1406.25 (chosen) | 91.0 ± 0.0 | 3.0 ± 0.7 | -1.0 ± 0.0 | 91.0, 91.0 |" in md
    )
    assert table.chart() == (
        "LumiNet shipped vs tuned (clsnew, fresh seeds): top-1 (%)",
        {"T 8, weight 5625 (shipped)": [90.0, 92.0], "T 16, weight 1406.25 (chosen)": [91.0, 91.0]},
    )


def test_the_unseen_folder_set_is_digits_0_to_7_written_once(tmp_path):
    from PIL import Image
    from sklearn.datasets import load_digits

    from benchmarks.cls_paired import digit_folders
    from luminet_det.cls.data import folder_classes

    root = digit_folders(str(tmp_path / "f"))
    assert folder_classes(root) == [f"c{k}" for k in range(8)]
    # scikit-learn's digits 0-7 are 1,443 of its 1,797 images; every fifth is validation
    count = {
        s: sum(len(files) for _, _, files in os.walk(tmp_path / "f" / s)) for s in ("train", "val")
    }
    assert count == {"train": 1166, "val": 277}
    image = Image.open(tmp_path / "f" / "val" / "c0" / "0000.png")
    assert image.size == (16, 16) and image.mode == "RGB"
    stamp = os.path.getmtime(tmp_path / "f" / "val" / "c0" / "0000.png")
    assert digit_folders(root) == root  # a finished set is reused, not rewritten
    assert os.path.getmtime(tmp_path / "f" / "val" / "c0" / "0000.png") == stamp
    # --quick: scikit-learn's first 300 images only (those of labels 0-7), and the marker file;
    # both splits still have every class
    labels = load_digits().target[:300]
    small = digit_folders(str(tmp_path / "q"), images=300)
    assert sum(len(files) for _, _, files in os.walk(small)) == int((labels < 8).sum()) + 1
    assert folder_classes(small) == [f"c{k}" for k in range(8)]


def test_luminet_push_against_cross_entropy_falls_as_one_over_root_c():
    from benchmarks.luminet_scale import measure

    # a student equal to its teacher: no LumiNet term and no gradient; the cross-entropy still
    # pulls (random hard labels)
    same = measure(10, 8.0, 16, 1.0, draws=2)
    assert same["term"] == pytest.approx(0.0, abs=1e-6)
    assert same["grad_rms"] == pytest.approx(0.0, abs=1e-6) and same["ce_grad_rms"] > 0
    # LumiNet's gradient per logit goes as 1/(C N T^2), the cross-entropy's as 1/(N sqrt(C)):
    # their ratio times sqrt(C) is the same at 8 and 1000 classes (T 8, N 64)
    few, many = measure(8, 8.0, 64, 0.0), measure(1000, 8.0, 64, 0.0)
    ratio_few = few["grad_rms"] / few["ce_grad_rms"] * 8**0.5
    ratio_many = many["grad_rms"] / many["ce_grad_rms"] * 1000**0.5
    assert ratio_few == pytest.approx(ratio_many, rel=0.05)
    assert few["grad_rms"] * 8 == pytest.approx(many["grad_rms"] * 1000, rel=0.05)


def test_confidence_rereads_the_final_students_of_a_runs_file(tmp_path, root_dir, capsys):
    from benchmarks.cls_runs import train_cls
    from benchmarks.confidence import config_and_overrides, main

    config = "configs/Digits-Classification/ce_resnet8.yaml"
    out = tmp_path / "run"
    overrides = [f"OUTPUT_DIR={out}", "SEED=0", "SOLVER.EPOCHS=1", "SOLVER.LR_STEPS=[1]"]
    top1 = train_cls(os.path.join(root_dir, config), overrides, quick=False)["top1"]
    command = f"python -m luminet_det.cls train --config {config} " + " ".join(overrides)
    assert config_and_overrides(command) == (os.path.join(root_dir, config), overrides)
    run = {"method": "student alone", "seed": 0, "command": command, "top1": top1}
    runs = tmp_path / "x.runs.json"
    runs.write_text(json.dumps({"runs": [run]}))
    main([str(runs)])
    row = json.loads((tmp_path / "x-confidence.runs.json").read_text())["runs"][0]
    assert row["top1"] == top1 and 10.0 <= row["confidence"] <= 100.0  # 10 classes
    gap = row["confidence"] - row["top1"]
    assert f"| {gap:.1f} |" in (tmp_path / "x-confidence.md").read_text()
    # a folder that holds another run's student is refused, not reported
    runs.write_text(json.dumps({"runs": [dict(run, top1=top1 + 1.0)]}))
    with pytest.raises(RuntimeError, match="another run's student"):
        main([str(runs)])
    with pytest.raises(SystemExit):  # argparse's error: not a <name>.runs.json
        main([str(tmp_path / "x.json")])
    assert "is not a results runs file: pass a <name>.runs.json" in capsys.readouterr().err
    with pytest.raises(ValueError, match="Not a luminet_det.cls train command"):
        config_and_overrides("python tools/train_net.py --config-file x.yaml")


def test_results_files_quote_the_command_so_it_can_be_pasted(monkeypatch):
    import shlex

    from benchmarks.results_io import command_line

    argv = ["benchmarks/run.py", "--methods", "LumiNet, weight 1778.8", "--name", "x"]
    monkeypatch.setattr(sys, "argv", argv)
    line = command_line()
    assert line == "python benchmarks/run.py --methods 'LumiNet, weight 1778.8' --name x"
    assert shlex.split(line)[1:] == argv


def _fake_train(config, overrides, quick):
    """A stand-in for train_cls: its job's number, and where and on how many threads it ran."""
    import torch

    if config == "fail":
        raise RuntimeError("run failed")
    return {"top1": float(overrides[0]), "threads": torch.get_num_threads(), "pid": os.getpid()}


def test_train_many_keeps_the_order_of_the_jobs_and_runs_each_worker_on_one_thread():
    from benchmarks.cls_runs import train_many

    jobs = [("c", [str(k)]) for k in range(4)]
    seen = []
    out = train_many(jobs, False, workers=2, done=lambda i, r: seen.append(i), train=_fake_train)
    assert [r["top1"] for r in out] == [0.0, 1.0, 2.0, 3.0] and sorted(seen) == [0, 1, 2, 3]
    assert {r["threads"] for r in out} == {1}
    pids = {r["pid"] for r in out}
    assert os.getpid() not in pids and 1 <= len(pids) <= 2
    serial = train_many(jobs, False, workers=1, train=_fake_train)
    assert [r["top1"] for r in serial] == [0.0, 1.0, 2.0, 3.0]
    assert {r["pid"] for r in serial} == {os.getpid()}
    with pytest.raises(RuntimeError, match="run failed"):
        train_many([("c", ["0"]), ("fail", ["1"])], False, workers=2, train=_fake_train)
    with pytest.raises(ValueError, match="workers=0: must be at least 1"):
        train_many(jobs, False, workers=0)


def test_equal_tuning_grids_overrides_and_shared_runs():
    from benchmarks.det_tune import METHODS, choose

    luminet, dkd = METHODS
    assert luminet.grid(2) == [(1.0, 1.0), (1.0, 4.0), (4.0, 1.0), (4.0, 4.0)]
    assert dkd.grid(2) == [(0.25, 1.0), (0.25, 4.0), (1.0, 1.0), (1.0, 4.0)]
    assert len(luminet.grid(3)) == len(dkd.grid(3)) == 9 and (2.0, 2.0) in luminet.grid(3)
    with pytest.raises(ValueError, match="points=4"):
        luminet.grid(4)
    # the shipped values are the configs' own: no overrides, and the det section's folder (so
    # either section reuses the other's finished runs)
    assert luminet.overrides(luminet.shipped) == [] and dkd.overrides(dkd.shipped) == []
    assert luminet.folder("/w", (1.0, 4.0), 3) == "/w/det/luminet_R50_R18/seed3"
    assert luminet.overrides((1.0, 1.0)) == [
        "MODEL.DISTILL.LUMINET.TEMPERATURE",
        "1.0",
        "MODEL.DISTILL.LUMINET.WEIGHT",
        "1.0",
    ]
    assert dkd.overrides((1.0, 4.0)) == [
        "MODEL.DISTILL.DKD.BETA",
        "1.0",
        "MODEL.DISTILL.DKD.TEMPERATURE",
        "4.0",
    ]
    assert dkd.folder("/w", (1.0, 4.0), 0) == "/w/det_tune/dkd_R50_R18/beta1_temperature4/seed0"
    # the highest AP; ties: the shipped values, then the earlier trial
    assert choose({(1.0, 1.0): 15.0, (1.0, 4.0): 20.0, (4.0, 1.0): 18.0}, (1.0, 1.0)) == (1.0, 4.0)
    assert choose({(4.0, 1.0): 20.0, (1.0, 1.0): 20.0}, (1.0, 1.0)) == (1.0, 1.0)
    assert choose({(4.0, 1.0): 20.0, (4.0, 4.0): 20.0}, (1.0, 1.0)) == (4.0, 1.0)


def test_the_shipped_values_of_the_tuning_are_the_configs_own():
    import functools

    from benchmarks.common import DIGITS
    from benchmarks.det_tune import METHODS
    from luminet_det import load_config

    for method in METHODS:
        cfg = load_config(os.path.join(DIGITS, method.config))
        values = tuple(functools.reduce(getattr, key.split("."), cfg) for key in method.keys)
        assert values == method.shipped, method.name


def test_equal_tuning_table_marks_choices_and_pairs_the_fresh_seeds():
    from benchmarks.det_tune import DetTuning

    grids = {
        "LumiNet": {(1.0, 1.0): 15.3, (1.0, 4.0): 20.0, (4.0, 1.0): 24.0, (4.0, 4.0): 21.0},
        "DKD": {(0.25, 1.0): 26.8, (1.0, 1.0): 25.0},
    }
    chosen = {"LumiNet": (4.0, 1.0), "DKD": (0.25, 1.0)}
    fresh = {
        "LumiNet, T 4, weight 1 (chosen)": [30.0, 28.0],
        "DKD, β 0.25, T 1 (shipped, chosen)": [27.0, 29.0],
        "LumiNet, T 1, weight 1 (shipped)": [25.0, 26.0],
    }
    table = DetTuning(
        grids, chosen, fresh, {"bbox/AP": 46.1}, provenance="teacher_R_50_FPN.yaml: 600 iterations"
    )
    md = "\n".join(table.markdown())
    assert "| T \\ weight | 1 | 4 |" in md
    assert "| 1 | 15.3 | 20.0 (shipped) |" in md and "| 4 | 24.0 (chosen) | 21.0 |" in md
    assert "| β \\ T | 1 |" in md and "| 0.25 | 26.8 (shipped, chosen) |" in md
    assert "Chosen: T 4, weight 1." in md and "Chosen: β 0.25, T 1." in md
    assert "4 and 2 trial runs" not in md and "2 and 4 trial runs" in md  # budgets as run
    assert "Trained: teacher_R_50_FPN.yaml: 600 iterations." in md
    assert "| LumiNet, T 1, weight 1 (shipped) | 25.5 ± 0.7 | 25.0, 26.0 |" in md
    # chosen LumiNet minus DKD per seed: +3, -1 (mean +1, t(1) 12.706 x 2.828 / 1.414 = 25.41);
    # minus the shipped values: +5, +2 (mean +3.5, 12.706 x 2.121 / 1.414 = 19.06)
    assert "| DKD, β 0.25, T 1 (shipped, chosen) | +1.00 | [-24.41, +26.41] | 1 of 2 |" in md
    assert "| LumiNet, T 1, weight 1 (shipped) | +3.50 | [-15.56, +22.56] | 2 of 2 |" in md
    assert table.chart() == ("equal tuning, fresh seeds: box AP", {"teacher": [46.1], **fresh})


def test_a_cached_run_is_stale_when_its_config_no_longer_gives_its_values(tmp_path):
    import yaml

    from benchmarks.common import DIGITS, stale
    from benchmarks.results_io import rel
    from luminet_det import load_config

    opts = ["SEED", "3", "OUTPUT_DIR", str(tmp_path)]
    cfg = load_config(os.path.join(DIGITS, "luminet_R50_R18.yaml"), opts)
    cfg.MODEL.DEVICE = "cpu"  # set by the command for the machine: not compared
    cfg.OUTPUT_DIR = "output/elsewhere"  # a path: not compared
    saved = yaml.safe_load(cfg.dump())
    del saved["MODEL"]["DISTILL"]["DIST"]  # a key added after the run: not compared
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(saved))
    assert stale(str(tmp_path), "luminet_R50_R18.yaml", opts) is None
    # the same run asked for with another weight (or a config whose default changed)
    weight = opts + ["MODEL.DISTILL.LUMINET.WEIGHT", "2.0"]
    assert stale(str(tmp_path), "luminet_R50_R18.yaml", weight) == (
        "MODEL.DISTILL.LUMINET.WEIGHT is 4.0 in the run, 2.0 now"
    )
    assert stale(str(tmp_path), "luminet_R50_R18.yaml", ["SEED", "4"]) == (
        "SEED is 3 in the run, 4 now"
    )
    # a teacher retrained after the run (its file newer than the run's checkpoint)
    final, teacher = tmp_path / "model_final.pth", tmp_path / "teacher.pth"
    final.write_bytes(b"run")
    teacher.write_bytes(b"teacher")
    os.utime(final, (1000, 1000))
    os.utime(teacher, (2000, 2000))
    why = stale(str(tmp_path), "luminet_R50_R18.yaml", opts, str(teacher))
    assert why == f"its teacher {rel(str(teacher))} was trained after it"
    os.utime(teacher, (500, 500))  # trained before the run: the run stays
    assert stale(str(tmp_path), "luminet_R50_R18.yaml", opts, str(teacher)) is None
