#!/usr/bin/env python
"""What LumiNet costs and what it buys, side by side with KD and DKD (`make bench`).

Cost (CPU, one fixed batch, interleaved repeats; ratios computed per round, summarised by
median and inter-quartile range): the losses alone; one DistillRCNN training step per method
and the teacher's share; the peak memory that 3 steps add. Accuracy, through
tools/train_net.py: the built-in detection set with paired seeds for the paper's Faster R-CNN
pair (every method; `det`), Mask R-CNN (`mask`), a Cascade teacher for a Faster R-CNN student
(`cascade`) and RetinaNet (`retinanet`); LumiNet's STATS modes in 2 processes; the built-in
classification sets; transfer by linear probing of the students' features (`probe`); KD's and
LumiNet's sensitivity to the batch size and the temperature (`sweeps`). Every method gets the
same hyper-parameter budget: one trial, the shipped config, never tuned on the validation set;
the exceptions are `dettune`, which gives LumiNet and DKD the same number of trials on seed 0
of the Faster R-CNN pair and compares their choices on fresh seeds (LumiNet's shipped weight on
that pair is its choice), and `clstune`, which tunes
LumiNet's T and weight on seed 0 of the hard set (9 trials) and confirms the choice against the
shipped values on fresh seeds and on a set never tuned on.

Results go to benchmarks/results/<name>.md and <name>.png. `--quick` runs everything at toy
sizes (used by the tests).
"""

import argparse
import datetime
import os
import sys
import tempfile
import time

# the repository, not this folder, is the import root (this folder's modules would shadow
# top-level names such as `statistics`)
sys.path[0] = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# first: a command, so the known dependency warnings are hidden (luminet_det.cli) before
# detectron2 is imported; then the plugin's registration
import luminet_det.cli  # noqa: E402,F401  isort: skip
import luminet_det.modeling  # noqa: E402,F401  isort: skip
from benchmarks import (  # noqa: E402
    classification,
    cls_paired,
    cls_tune,
    det_paired,
    det_tune,
    loss_cost,
    probe,
    report,
    stats_modes,
    step_cost,
    sweeps,
)
from benchmarks.common import ROOT, log  # noqa: E402

DETECTION = list(det_paired.GROUPS)  # det, mask, cascade, retinanet
SECTIONS = [
    "losses",
    "steps",
    "memory",
    *DETECTION,
    "dettune",
    "stats",
    "cls",
    "clshard",
    "clsvit",
    "clsnew",
    "probe",
    "sweeps",
    "clstune",
]


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="toy sizes (tests)")
    parser.add_argument(
        "--seeds",
        type=int,
        default=3,
        help="mask, cascade, retinanet, lazy, stats, cls, clsvit, clsnew",
    )
    parser.add_argument(
        "--paired-seeds",
        type=int,
        default=5,
        help="det, clshard, and the fresh seeds of dettune and clstune",
    )
    parser.add_argument(
        "--tune-points",
        type=int,
        default=3,
        choices=(2, 3),
        help="dettune: values tried per tuned value (3: 9 trials per method; 2: the ends, 4)",
    )
    parser.add_argument("--repeats", type=int, default=15, help="interleaved timing rounds")
    parser.add_argument("--skip", nargs="*", default=[], choices=SECTIONS)
    parser.add_argument("--only", nargs="*", default=None, choices=SECTIONS, help="run these")
    parser.add_argument("--results", default=os.path.join(ROOT, "benchmarks", "results"))
    parser.add_argument("--name", default=None, help="results file stem (default: date)")
    parser.add_argument(
        "--methods",
        nargs="+",
        default=None,
        metavar="LABEL",
        help="detection groups and clshard: run only these methods (labels as in the report, "
        "e.g. 'student alone' KD DIST CrossKD); the reference (LumiNet) always runs",
    )
    parser.add_argument(
        "--workers",
        type=int,
        default=1,
        help="sweeps and clstune: train this many runs at once, each on one thread (on a 2-core "
        "machine, 2 one-thread runs finish more runs per hour than one run on both cores)",
    )
    parser.add_argument(
        "--stats-images",
        type=int,
        nargs="+",
        default=[4, 1],
        help="statistics section: images per process of each setting, in run order",
    )
    args = parser.parse_args(argv)
    if args.workers < 1:
        parser.error(f"--workers {args.workers}: must be at least 1")
    if args.quick:
        args.seeds, args.repeats, args.paired_seeds = 1, 3, 2
    run = set(SECTIONS if args.only is None else args.only) - set(args.skip)
    if args.methods is not None:
        known = {m[0] for k in det_paired.sections(run) for m in det_paired.GROUPS[k].methods}
        for key in set(cls_paired.SETS) & run:
            known |= {label for label, _, _ in cls_paired.SETS[key].runs()}
        unknown = sorted(set(args.methods) - known)
        if unknown:
            parser.error(
                f"--methods {unknown}: no section chosen has such a method; the chosen "
                f"sections' methods are {sorted(known)}"
            )
    os.makedirs(args.results, exist_ok=True)
    if not args.quick:
        os.makedirs(f"{ROOT}/output/bench", exist_ok=True)
        name = args.name or datetime.date.today().isoformat()
        return _run(args, run, f"{ROOT}/output/bench", name)
    # the toy runs' checkpoints and predictions (about 3 GB) go with the temporary folder
    with tempfile.TemporaryDirectory(prefix="luminet_bench_") as work:
        return _run(args, run, work, args.name or "quick")


def _run(args, run, work, name):
    """Run the sections ``run`` in ``work`` and write ``name``.md/.runs.json/.png to results."""
    start = time.time()
    env = dict(os.environ)
    from luminet_det.data import digits_root
    from luminet_det.data.digits import generate_digits_detection, is_generated

    if args.quick:
        generate_digits_detection(os.path.join(work, "digits_det"), num_train=8, num_val=4)
        # for the training subprocesses and for what runs here (stats_modes.noise)
        os.environ["DETECTRON2_DATASETS"] = env["DETECTRON2_DATASETS"] = work
    elif not is_generated(digits_root()) and run & {*DETECTION, "stats"}:
        log(f"generating the built-in detection set in {digits_root()}")
        generate_digits_detection(digits_root(), progress=True)

    sections = []
    if "losses" in run:
        log("cost of the losses alone")
        sections.append(loss_cost.run(20 if args.quick else 200))
    if "steps" in run:
        log("cost of one training step per configuration")
        sections.append(step_cost.run(args.repeats, args.quick, work))
        if "memory" in run:
            log("peak memory per configuration")
            sections[-1].memory = step_cost.measure_memory(args.quick, work)
    for key in det_paired.sections(run):
        seeds = args.paired_seeds if key == "det" and not args.quick else args.seeds
        group = det_paired.GROUPS[key]
        sections.append(det_paired.run(group, seeds, args.quick, work, env, methods=args.methods))
    if "dettune" in run:
        seeds = 1 if args.quick else args.paired_seeds
        sections.append(det_tune.run(seeds, args.quick, work, env, args.tune_points))
    if "stats" in run:
        batches = [2 * n for n in args.stats_images]  # 2 processes
        stats = stats_modes.run(args.seeds, args.quick, work, env, global_batches=batches)
        log("statistics: how far local batch moments are from the data set's")
        per_process = [r["ims_per_batch"] // stats.procs for r in stats.runs]
        stats.noise = stats_modes.noise(args.quick, work, per_process=per_process)
        sections.append(stats)
    if "cls" in run:
        sections.append(classification.run(args.seeds, args.quick, work))
    for key in (k for k in cls_paired.SETS if k in run):  # clshard, clsvit, clsnew
        seeds = args.paired_seeds if key == "clshard" else args.seeds
        sections.append(cls_paired.run(seeds, args.quick, work, args.methods, key))
    if "probe" in run:
        sections.append(probe.run(args.seeds, args.quick, work))
    if "sweeps" in run:
        sweep = sweeps.run(args.seeds, args.quick, work, args.workers)
        sweep.figure = f"{name}-sweeps.png"
        sweep.plot(os.path.join(args.results, sweep.figure))
        sections.append(sweep)
    if "clstune" in run:
        seeds = 1 if args.quick else args.paired_seeds
        sections.append(cls_tune.run(seeds, args.quick, work, args.workers))
    md = os.path.join(args.results, f"{name}.md")
    report.write_markdown(md, sections, time.time() - start)
    report.write_runs(os.path.join(args.results, f"{name}.runs.json"), sections)
    report.write_chart(os.path.join(args.results, f"{name}.png"), sections)
    log(f"wrote {md}")
    print(open(md).read())


if __name__ == "__main__":
    main()
