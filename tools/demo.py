#!/usr/bin/env python
"""`make demo`: the plugin's main job end to end on the built-in digits set, on CPU.

1. generate the built-in detection set if absent (no download);
2. train the R-50-FPN teacher unless a trained one is cached;
3. train the R-18-FPN student alone (the baseline) unless cached;
4. distill an R-18-FPN student from the teacher with LumiNet through tools/train_net.py
   (``--check-teacher`` first evaluates the teacher and refuses a useless one);
5. export the distilled student for stock detectron2;
6. print teacher / student AP side by side with the paths of checkpoints and the export.

Every training step goes through tools/train_net.py, which prints detectron2's progress with
ETA. Options: --fresh retrains everything; --skip-baseline omits step 3.
"""

import argparse
import os
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONFIGS = os.path.join(ROOT, "configs", "Digits-Detection")


#: the demo's three runs, in order
_CONFIGS = ("teacher_R_50_FPN.yaml", "student_R_18_FPN.yaml", "luminet_R50_R18.yaml")


def banner(text):
    print(f"\n==== {text} ====", flush=True)


def run(cmd):
    print("$ " + " ".join(cmd), flush=True)
    subprocess.run(cmd, check=True, cwd=ROOT)


def load_cfg(name):
    from luminet_det import load_config  # registers the plugin

    return load_config(os.path.join(CONFIGS, name))


def train(config, fresh, extra=()):
    from luminet_det.runio import last_box_ap

    cfg = load_cfg(config)
    out = os.path.join(ROOT, cfg.OUTPUT_DIR)
    final = os.path.join(out, "model_final.pth")
    if os.path.isfile(final) and last_box_ap(out) and not fresh:
        print(f"cached: {final} (delete it or pass --fresh to retrain)")
    else:
        t0 = time.time()
        run(
            [
                sys.executable,
                "tools/train_net.py",
                "--config-file",
                os.path.join(CONFIGS, config),
                *extra,
            ]
        )
        print(f"trained in {time.time() - t0:.0f} s")
    return cfg, out, final


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--fresh", action="store_true", help="retrain even if cached")
    parser.add_argument("--skip-baseline", action="store_true", help="no student-alone run")
    args = parser.parse_args()
    start = time.time()

    import luminet_det.cli  # noqa: F401  isort: skip  (a command: hides known dependency noise)
    import detectron2
    import torch

    import luminet_det
    from luminet_det.data import digits_root
    from luminet_det.data.digits import generate_digits_detection, is_generated
    from luminet_det.runio import last_box_ap

    seeds = {name: load_cfg(name).SEED for name in _CONFIGS}
    print(
        f"luminet_det {luminet_det.__version__}, detectron2 {detectron2.__version__}, torch "
        f"{torch.__version__}, {os.cpu_count()} CPU cores; seeds (SEED of each config): {seeds}",
        flush=True,
    )

    banner("1/5 built-in digits detection set")
    root = digits_root()
    if is_generated(root):
        print(f"present: {root}")
    else:
        print(f"generating 1,000 train + 200 val images in {root} ...", flush=True)
        generate_digits_detection(root, progress=True)

    banner("2/5 teacher: R-50-FPN (configs/Digits-Detection/teacher_R_50_FPN.yaml)")
    _, t_out, t_final = train("teacher_R_50_FPN.yaml", args.fresh)

    rows = [("teacher R-50-FPN", last_box_ap(t_out), t_final)]
    if not args.skip_baseline:
        banner("3/5 student alone: R-18-FPN (student_R_18_FPN.yaml)")
        _, b_out, b_final = train("student_R_18_FPN.yaml", args.fresh)
        rows.append(("student R-18-FPN alone", last_box_ap(b_out), b_final))

    banner("4/5 LumiNet student: R-18-FPN distilled from the teacher (luminet_R50_R18.yaml)")
    s_cfg, s_out, s_final = train("luminet_R50_R18.yaml", args.fresh, extra=["--check-teacher"])
    rows.append(("student R-18-FPN + LumiNet", last_box_ap(s_out), s_final))

    banner("5/5 export the distilled student for stock detectron2")
    export_dir = os.path.join(s_out, "export")
    run(
        [
            sys.executable,
            "tools/export_student.py",
            "--config-file",
            os.path.join(CONFIGS, "luminet_R50_R18.yaml"),
            "--checkpoint",
            s_final,
            "--output",
            export_dir,
        ]
    )

    banner("results on digits_det_val (COCO box AP, %)")
    print(f"{'model':<30}{'AP':>7}{'AP50':>7}{'AP75':>7}  checkpoint")
    for name, ap, path in rows:
        vals = [
            ap.get(f"bbox/{k}", float("nan")) if ap else float("nan")
            for k in ("AP", "AP50", "AP75")
        ]
        print(
            f"{name:<30}{vals[0]:7.1f}{vals[1]:7.1f}{vals[2]:7.1f}  {os.path.relpath(path, ROOT)}"
        )
    print(f"\nexported student: {os.path.relpath(export_dir, ROOT)}/student.pth + student.yaml")
    print(f"demo finished in {time.time() - start:.0f} s")


if __name__ == "__main__":
    main()
