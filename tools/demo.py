#!/usr/bin/env python
"""`make demo`: the plugin's main job end to end on the built-in digits set, on CPU.

1. generate the built-in detection set if absent (no download);
2. train the R-50-FPN teacher unless a trained one is cached; if its box AP (from its own
   evaluation) is below 1 (a detector trained from scratch in 400 iterations collapses in some
   runs), train it again with the next SEED, and stop after 3 collapsed seeds;
3. train the R-18-FPN student alone (the baseline) and 4. distill an R-18-FPN student from the
   teacher with LumiNet, unless cached: both through tools/train_net.py and at the same time,
   each process on half of the CPU cores (on 2 cores a student's step gains less from a second
   thread than a second run does), with one progress line (iterations, ETA) for the pair;
5. export the distilled student for stock detectron2;
6. print teacher / student AP side by side with the paths of checkpoints and the export.

The teacher trains alone with detectron2's progress lines (with ETA); the students' own lines
go to ``console.txt`` in their output folders. Options: --fresh retrains everything;
--skip-baseline omits the student alone; --one-at-a-time trains the students one after the
other with all cores.
"""

import argparse
import json
import math
import os
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONFIGS = os.path.join(ROOT, "configs", "Digits-Detection")


#: the demo's three runs, in order
_CONFIGS = ("teacher_R_50_FPN.yaml", "student_R_18_FPN.yaml", "luminet_R50_R18.yaml")
#: the lowest teacher box AP (%) the demo distills from (as tools/train_net.py --check-teacher)
MIN_TEACHER_AP = 1.0
#: how many seeds (the config's SEED, then the next ones) the teacher is trained with at most
TEACHER_ATTEMPTS = 3


def banner(text):
    print(f"\n==== {text} ====", flush=True)


def run(cmd):
    print("$ " + " ".join(cmd), flush=True)
    subprocess.run(cmd, check=True, cwd=ROOT)


def load_cfg(name):
    from luminet_det import load_config  # registers the plugin

    return load_config(os.path.join(CONFIGS, name))


def train_command(config):
    return [sys.executable, "tools/train_net.py", "--config-file", os.path.join(CONFIGS, config)]


def planned(config, fresh):
    """(cfg, output folder, final checkpoint, cached) of a config's run; cached when the final
    checkpoint and an evaluation of it exist (and not ``fresh``)."""
    from luminet_det.runio import last_box_ap

    cfg = load_cfg(config)
    out = os.path.join(ROOT, cfg.OUTPUT_DIR)
    final = os.path.join(out, "model_final.pth")
    cached = os.path.isfile(final) and last_box_ap(out) is not None and not fresh
    if cached:
        print(f"cached: {final} (delete it or pass --fresh to retrain)")
    return cfg, out, final, cached


def run_training(config, *opts):
    """Train ``config`` (with config overrides ``opts``) with all cores and say how long it took."""
    start = time.time()
    run(train_command(config) + list(opts))
    print(f"trained in {time.time() - start:.0f} s")


def train(config, fresh):
    """Train one config with all cores (unless cached); returns (output folder, checkpoint)."""
    _, out, final, cached = planned(config, fresh)
    if not cached:
        run_training(config)
    return out, final


def check_teacher(row, checkpoint):
    """The teacher's metrics row (``last_box_ap`` of its run: the evaluation of ``checkpoint``
    at the end of its training) if its box AP is at least :data:`MIN_TEACHER_AP`; otherwise
    stop: distilling from it would teach the students noise."""
    ap = teacher_ap(row)
    if not ap >= MIN_TEACHER_AP:
        raise SystemExit(
            f"error: the teacher {os.path.relpath(checkpoint, ROOT)} reaches box AP {ap:.2f} on "
            f"digits_det_val, below {MIN_TEACHER_AP}: distilling from it would teach noise. "
            "Train it with a seed not tried yet (python tools/train_net.py --config-file "
            f"configs/Digits-Detection/teacher_R_50_FPN.yaml SEED {TEACHER_ATTEMPTS}) and run "
            "the demo again (it reuses that teacher), and check its log.txt."
        )
    print(f"teacher box AP {ap:.1f} (its own evaluation; the demo needs >= {MIN_TEACHER_AP})")
    return row


def teacher_ap(row):
    """Box AP of a metrics row (NaN without one: no evaluation, or no detections)."""
    return row.get("bbox/AP", float("nan")) if row else float("nan")


def train_teacher(fresh, attempts=TEACHER_ATTEMPTS):
    """Train the teacher (unless cached) and return (output folder, checkpoint, its metrics row)
    once its own evaluation reaches :data:`MIN_TEACHER_AP`. A collapsed run (no detections, or
    AP below that) is trained again from scratch with the next ``SEED``, at most ``attempts``
    runs in all; then :func:`check_teacher` stops the demo."""
    from luminet_det.runio import last_box_ap

    config = "teacher_R_50_FPN.yaml"
    cfg, out, final, cached = planned(config, fresh)
    for attempt in range(attempts):
        seed = cfg.SEED + attempt
        if attempt or not cached:
            run_training(config, *(["SEED", str(seed)] if attempt else []))
        row = last_box_ap(out)
        ap = teacher_ap(row)
        if ap >= MIN_TEACHER_AP or attempt + 1 == attempts:
            break
        print(
            f"the teacher's training collapsed (box AP {ap:.2f}, below {MIN_TEACHER_AP}): a "
            "detector trained from scratch in 400 iterations does in some runs. Training it "
            f"again with SEED {seed + 1} (run {attempt + 2} of at most {attempts}).",
            flush=True,
        )
    return out, final, check_teacher(row, final)


def minutes(seconds):
    return f"{int(seconds) // 60}:{int(seconds) % 60:02d}"


def iterations_done(metrics, offset):
    """Iterations a run has logged to its metrics.json past byte ``offset`` (0 if none yet)."""
    if not os.path.isfile(metrics):
        return 0
    with open(metrics) as f:
        f.seek(offset)
        rows = [json.loads(line) for line in f.read().splitlines() if line.strip()[-1:] == "}"]
    return max((int(r["iteration"]) + 1 for r in rows if "iteration" in r), default=0)


def train_together(jobs, fresh, period=20.0):
    """Train the ``(label, config)`` jobs not cached at the same time, each process with an
    equal share of the CPU cores and its console output in ``<OUTPUT_DIR>/console.txt``;
    prints one progress line (iterations, elapsed, ETA) every ``period`` seconds. Stops the
    others and shows the end of the failed run's output if one fails. Returns
    ``{config: (output folder, checkpoint)}``."""
    done, running = {}, []
    for label, config in jobs:
        cfg, out, final, cached = planned(config, fresh)
        done[config] = (out, final)
        if not cached:
            running.append(
                {"label": label, "config": config, "out": out, "total": cfg.SOLVER.MAX_ITER}
            )
    if not running:
        return done
    threads = max(1, (os.cpu_count() or 1) // len(running))
    env = dict(os.environ, OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads))
    start = time.time()
    try:
        for job in running:
            os.makedirs(job["out"], exist_ok=True)
            job["metrics"] = os.path.join(job["out"], "metrics.json")
            job["offset"] = os.path.getsize(job["metrics"]) if os.path.isfile(job["metrics"]) else 0
            job["console"] = os.path.join(job["out"], "console.txt")
            cmd = train_command(job["config"])
            print(
                f"$ {' '.join(cmd)}  # {threads} thread(s), output in "
                f"{os.path.relpath(job['console'], ROOT)}",
                flush=True,
            )
            with open(job["console"], "w") as console:
                job["proc"] = subprocess.Popen(
                    cmd, cwd=ROOT, env=env, stdout=console, stderr=subprocess.STDOUT
                )
        printed = start
        while True:
            codes = [job["proc"].poll() for job in running]
            failed = [job for job, code in zip(running, codes) if code not in (None, 0)]
            if failed:
                raise _RunFailed(failed[0])
            if all(code == 0 for code in codes):
                break
            time.sleep(1.0)
            if time.time() - printed >= period:
                printed = time.time()
                print("  " + progress(running, printed - start), flush=True)
    except _RunFailed as e:
        stop(running)
        with open(e.job["console"]) as f:
            tail = f.read().splitlines()[-25:]
        print("\n".join(tail), file=sys.stderr)
        raise SystemExit(
            f"error: the {e.job['label']} run failed (exit code {e.job['proc'].returncode}); "
            f"its output: {e.job['console']}"
        ) from None
    finally:
        stop(running)  # also on Ctrl-C
    print(f"trained in {time.time() - start:.0f} s ({len(running)} at once)")
    return done


def stop(running, grace=10.0):
    """Terminate the runs still going (their checkpoints so far stay), killing those that
    have not exited after ``grace`` seconds."""
    alive = [job["proc"] for job in running if "proc" in job and job["proc"].poll() is None]
    for proc in alive:
        proc.terminate()
    for proc in alive:
        try:
            proc.wait(timeout=grace)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def progress(running, elapsed):
    """One line: each run's logged iterations, the time elapsed and the training ETA (the
    slowest run's, from its rate so far)."""
    parts, eta = [], 0.0
    for job in running:
        n = min(iterations_done(job["metrics"], job["offset"]), job["total"])  # + evaluation row
        parts.append(f"{job['label']} {n}/{job['total']}")
        eta = max(eta, elapsed * (job["total"] - n) / n if n else math.inf)
    eta_text = minutes(eta) if math.isfinite(eta) else "?"
    return (
        f"{', '.join(parts)} iterations · {minutes(elapsed)} elapsed · training ETA {eta_text} "
        "(then evaluation)"
    )


class _RunFailed(Exception):
    def __init__(self, job):
        super().__init__(job["label"])
        self.job = job


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--fresh", action="store_true", help="retrain even if cached")
    parser.add_argument("--skip-baseline", action="store_true", help="no student-alone run")
    parser.add_argument(
        "--one-at-a-time",
        action="store_true",
        help="train the two students one after the other, each with all cores",
    )
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
    t_out, t_final, t_row = train_teacher(args.fresh)

    students = [("LumiNet student", "luminet_R50_R18.yaml")]
    if not args.skip_baseline:
        students.insert(0, ("student alone", "student_R_18_FPN.yaml"))
    banner(
        f"{'3-4' if len(students) == 2 else '4'}/5 R-18-FPN students: "
        + " and ".join(f"{label} ({config})" for label, config in students)
    )
    if args.one_at_a_time:
        trained = {config: train(config, args.fresh) for _, config in students}
    else:
        trained = train_together(students, args.fresh)
    rows = [("teacher R-50-FPN", t_row, t_final)]
    if not args.skip_baseline:
        b_out, b_final = trained["student_R_18_FPN.yaml"]
        rows.append(("student R-18-FPN alone", last_box_ap(b_out), b_final))
    s_out, s_final = trained["luminet_R50_R18.yaml"]
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
