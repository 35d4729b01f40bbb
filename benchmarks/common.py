"""What every benchmark section shares: paths, the table of methods, summaries, training runs."""

from __future__ import annotations

import datetime
import math
import multiprocessing
import os
import shlex
import shutil
import statistics
import subprocess
import sys
import time
import traceback
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import torch

from .results_io import ROOT, rel

DIGITS = os.path.join(ROOT, "configs", "Digits-Detection")
TEACHER_CONFIG = "teacher_R_50_FPN.yaml"  # the built-in set's Faster R-CNN teacher
TEACHER_FINAL = os.path.join(ROOT, "output", "digits", "teacher_R_50_FPN", "model_final.pth")
#: the metrics of a detection run that the tables report
METRIC_NAMES = {"bbox/AP": "box AP", "segm/AP": "mask AP"}


@dataclass(frozen=True)
class Method:
    """One row of every detection table.

    Attributes:
        name (str): the row's label.
        losses (tuple[str]): MODEL.DISTILL.LOSSES.
        config (str): its config in configs/Digits-Detection/.
    """

    name: str
    losses: tuple
    config: str

    @property
    def slug(self) -> str:
        return self.name.replace(" ", "_").replace("+", "_")


#: the one table of detection methods, in report order
METHODS: List[Method] = [
    Method("student alone", (), "student_R_18_FPN.yaml"),
    Method("KD", ("kd",), "kd_R50_R18.yaml"),
    Method("DKD", ("dkd",), "dkd_R50_R18.yaml"),
    Method("logitstd", ("logitstd",), "logitstd_R50_R18.yaml"),
    Method("DIST", ("dist",), "dist_R50_R18.yaml"),
    Method("LumiNet", ("luminet",), "luminet_R50_R18.yaml"),
    Method("LumiNet+ReviewKD", ("luminet", "reviewkd"), "luminet_reviewkd_R50_R18.yaml"),
]
METHOD = {m.name: m for m in METHODS}

#: tools/train_net.py overrides of --quick runs (toy sizes)
QUICK_DET = {
    "SOLVER.MAX_ITER": "3",
    "SOLVER.IMS_PER_BATCH": "2",
    "SOLVER.WARMUP_ITERS": "1",
    "SOLVER.STEPS": "(100,)",
    "MODEL.ROI_HEADS.BATCH_SIZE_PER_IMAGE": "32",
    "DATALOADER.NUM_WORKERS": "0",
    "MODEL.WEIGHTS": "",  # from scratch: no trained backbones in a fresh clone
}


def log(msg: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {msg}", flush=True)


def summary(values: Sequence[float]) -> Dict[str, float]:
    """median, first and third quartile, and count of ``values``."""
    values = sorted(values)
    q = statistics.quantiles(values, n=4) if len(values) >= 2 else [values[0]] * 3
    return {"median": statistics.median(values), "q1": q[0], "q3": q[2], "n": len(values)}


#: two-sided 95 % quantiles of Student's t by degrees of freedom
_T95 = {1: 12.706, 2: 4.303, 3: 3.182, 4: 2.776, 5: 2.571, 6: 2.447, 7: 2.365, 8: 2.306, 9: 2.262}


def paired(differences: List[float]) -> Dict[str, float]:
    """Mean of per-seed differences and the half-width of its 95 % t-interval (nan for fewer
    than 2 seeds)."""
    n = len(differences)
    mean = statistics.mean(differences)
    if n < 2:
        return {"mean": mean, "half": float("nan"), "n": n}
    t = _T95.get(n - 1, 1.96)
    return {"mean": mean, "half": t * statistics.stdev(differences) / math.sqrt(n), "n": n}


def paired_lines(values: Dict[str, List[float]], reference: str, what: str) -> List[str]:
    """Markdown: ``reference`` minus every other method, per seed (seed k of each list is the
    same seed): mean, 95 % t-interval, seeds where ``reference`` is higher."""
    lines = [
        f"{reference} minus each method, per seed ({what}): mean, 95 % t-interval, seeds where "
        f"{reference} is higher.",
        "",
        f"| vs | mean difference | 95 % interval | {reference} wins |",
        "|---|---|---|---|",
    ]
    for name, vals in values.items():
        if name != reference:
            lines.append(paired_row(name, [a - b for a, b in zip(values[reference], vals)]))
    return lines + [""]


def paired_row(name: str, diff: List[float]) -> str:
    """A markdown row ``| name | mean | [low, high] | k of n |`` of per-seed differences: their
    mean, 95 % t-interval and the seeds where the difference is positive."""
    p = paired(diff)
    return (
        f"| {name} | {p['mean']:+.2f} | [{p['mean'] - p['half']:+.2f}, "
        f"{p['mean'] + p['half']:+.2f}] | {sum(d > 0 for d in diff)} of {len(diff)} |"
    )


def fmt(s: Dict[str, float], scale: float = 1.0, digits: int = 2) -> str:
    """A :func:`summary` as ``median [q1, q3]``."""
    m, q1, q3 = (s[k] * scale for k in ("median", "q1", "q3"))
    return f"{m:.{digits}f} [{q1:.{digits}f}, {q3:.{digits}f}]"


def mean_std(values: Sequence[float]) -> str:
    """``mean ± std`` of the finite values (one value alone; "n/a" for none)."""
    vals = [v for v in values if v == v]
    if not vals:
        return "n/a"
    if len(vals) == 1:
        return f"{vals[0]:.1f}"
    return f"{statistics.mean(vals):.1f} ± {statistics.stdev(vals):.1f}"


def distill_cfg(losses: Sequence[str], teacher_weights: str, quick: bool):
    """The built-in set's LumiNet+ReviewKD config with ``losses``, on the CPU."""
    from luminet_det import load_config

    cfg = load_config(os.path.join(DIGITS, METHOD["LumiNet+ReviewKD"].config))
    cfg.MODEL.DEVICE = "cpu"
    cfg.MODEL.DISTILL.LOSSES = list(losses)
    cfg.MODEL.DISTILL.TEACHER_WEIGHTS = teacher_weights
    if quick:
        cfg.MODEL.ROI_HEADS.BATCH_SIZE_PER_IMAGE = 32
        cfg.MODEL.RPN.POST_NMS_TOPK_TRAIN = 64
    return cfg


def random_weights(config: str, work: str) -> str:
    """A checkpoint of ``config``'s (in configs/Digits-Detection/) architecture with random
    weights, written once into ``work``: the teacher of --quick runs and of timing runs (step
    times do not depend on the weights' values)."""
    path = os.path.join(work, config.replace(".yaml", ".pth").replace(".py", ".pth"))
    if not os.path.isfile(path):
        from detectron2.modeling import build_model

        from luminet_det import load_config

        if config.endswith(".py"):  # a LazyConfig teacher
            from detectron2.config import LazyConfig, instantiate

            model = instantiate(LazyConfig.load(os.path.join(DIGITS, config)).model)
        else:
            cfg = load_config(os.path.join(DIGITS, config))
            cfg.MODEL.DEVICE, cfg.MODEL.WEIGHTS = "cpu", ""
            model = build_model(cfg)
        torch.save({"model": model.state_dict()}, path)
    return path


def stand_in_teacher(work: str, quick: bool) -> str:
    """Weights for timing runs: the demo's trained teacher when there is one (not --quick),
    else :func:`random_weights` of its architecture."""
    if os.path.isfile(TEACHER_FINAL) and not quick:
        return TEACHER_FINAL
    return random_weights(TEACHER_CONFIG, work)


def final_ap(output_dir: str) -> float:
    """The last box AP of a detectron2 run."""
    return final_metrics(output_dir)["bbox/AP"]


def finished(output_dir: str) -> bool:
    """A finished run (final checkpoint and a finite AP row): reused, so an interrupted
    benchmark loses at most the run in progress."""
    if not os.path.isfile(os.path.join(output_dir, "model_final.pth")):
        return False
    try:
        ap = final_ap(output_dir)
    except (OSError, IndexError, ValueError):
        return False
    return ap == ap


#: config keys a cached run is not compared on: files, which runs of the same command may spell
#: differently (absolute, relative), and the device, which the command sets for the machine
_NOT_COMPARED = {
    "MODEL.DEVICE",
    "OUTPUT_DIR",
    "MODEL.WEIGHTS",
    "MODEL.DISTILL.TEACHER_CONFIG",
    "MODEL.DISTILL.TEACHER_WEIGHTS",
}


def _flat(node, prefix: str = "") -> Dict[str, object]:
    """A nested config dict as {"A.B.C": value}."""
    if not isinstance(node, dict):
        return {prefix: node}
    out: Dict[str, object] = {}
    for key, value in node.items():
        out.update(_flat(value, f"{prefix}.{key}" if prefix else str(key)))
    return out


def stale(
    output_dir: str, config: str, opts: Sequence[str], teacher: Optional[str] = None
) -> Optional[str]:
    """Why the finished run in ``output_dir`` is not a run of ``config`` (in
    configs/Digits-Detection/) with ``opts`` any more, or None: its ``teacher`` weights file was
    written after the run's final checkpoint (a retrained teacher), or the first value of its
    saved ``config.yaml`` that differs from what the config gives today (a config whose defaults
    changed after the run was cached); :data:`_NOT_COMPARED` and keys the run predates are left
    out."""
    import yaml

    from luminet_det import load_config

    final = os.path.join(output_dir, "model_final.pth")
    if teacher and os.path.isfile(teacher) and os.path.isfile(final):
        if os.path.getmtime(teacher) > os.path.getmtime(final):
            return f"its teacher {rel(teacher)} was trained after it"
    with open(os.path.join(output_dir, "config.yaml")) as f:
        saved = _flat(yaml.safe_load(f))
    now = _flat(yaml.safe_load(load_config(os.path.join(DIGITS, config), list(opts)).dump()))
    for key in sorted(saved.keys() & now.keys() - _NOT_COMPARED):
        if saved[key] != now[key]:
            return f"{key} is {saved[key]!r} in the run, {now[key]!r} now"
    return None


def final_metrics(output_dir: str) -> Dict[str, float]:
    """The last evaluation row of a detectron2 run (box AP, mask AP when evaluated)."""
    from luminet_det.runio import last_box_ap

    row = last_box_ap(output_dir)
    if row is None:
        raise ValueError(f"No box AP in {output_dir}/metrics.json.")
    return {k: v for k, v in row.items() if k in METRIC_NAMES}


def trained(config: str, env: Optional[dict], label: str) -> Tuple[str, Dict[str, float]]:
    """(model_final.pth, final metrics) of ``config`` (in configs/Digits-Detection/) trained
    with tools/train_net.py (a LazyConfig ``.py``: tools/lazyconfig_train_net.py) into its
    output directory; trained first if not there yet."""
    from luminet_det import load_config

    lazy = config.endswith(".py")
    if lazy:
        from detectron2.config import LazyConfig

        out = os.path.join(ROOT, LazyConfig.load(os.path.join(DIGITS, config)).train.output_dir)
    else:
        out = os.path.join(ROOT, load_config(os.path.join(DIGITS, config)).OUTPUT_DIR)
    final = os.path.join(out, "model_final.pth")
    if not os.path.isfile(final):
        log(f"{label}: training {config} first; progress with ETA in {rel(out)}/log.txt")
        tool = "tools/lazyconfig_train_net.py" if lazy else "tools/train_net.py"
        # --resume: an interrupted teacher continues from its last checkpoint (students are
        # rerun from the start instead, so that paired seeds see the same data order)
        cmd = [sys.executable, tool, "--config-file", os.path.join(DIGITS, config), "--resume"]
        proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True)
        if proc.returncode != 0:
            raise RuntimeError(f"{' '.join(cmd)} failed:\n{proc.stderr[-3000:]}")
    metrics = final_metrics(out)
    log(f"{label}: {config}: {metrics}")
    return final, metrics


def detection_teacher(quick: bool, work: str, env: Optional[dict]) -> Tuple[str, float]:
    """(weights, box AP) of the built-in set's R-50-FPN teacher, see :func:`trained` (quick:
    :func:`random_weights` of its architecture, AP nan)."""
    if quick:
        return random_weights(TEACHER_CONFIG, work), float("nan")
    weights, metrics = trained(TEACHER_CONFIG, env, "teacher")
    return weights, metrics["bbox/AP"]


def detector_command(
    config: str,
    out: str,
    seed: int,
    teacher: Optional[str],
    quick: bool,
    extra: Sequence[str] = (),
    procs: int = 1,
) -> List[str]:
    """The tools/train_net.py command of one run of ``config`` (in configs/Digits-Detection/)."""
    cmd = [sys.executable, "tools/train_net.py", "--config-file", os.path.join(DIGITS, config)]
    # a free port: detectron2's default is fixed per user, so two runs at once would clash
    cmd += ["--num-gpus", str(procs), "--dist-url", "auto"] if procs > 1 else []
    cmd += ["SEED", str(seed), "OUTPUT_DIR", out, "DATALOADER.NUM_WORKERS", "1"]
    cmd += [x for kv in QUICK_DET.items() for x in kv] if quick else []
    if teacher is not None:
        cmd += ["MODEL.DISTILL.TEACHER_WEIGHTS", teacher]
    return cmd + list(extra)


def detector_record(
    config: str,
    out: str,
    seed: int,
    teacher: Optional[str],
    quick: bool,
    extra: Sequence[str] = (),
    procs: int = 1,
) -> Dict[str, str]:
    """A runs file's ``config`` and ``command`` of one run (:func:`detector_command`), as it
    runs from the repository: ``python`` and paths relative to it."""
    command = ["python"] + detector_command(config, out, seed, teacher, quick, extra, procs)[1:]
    return {
        "config": rel(os.path.join(DIGITS, config)),
        "command": shlex.join(rel(x) for x in command),
    }


def train_detector(
    label: str,
    config: str,
    out: str,
    seed: int,
    teacher: Optional[str],
    quick: bool,
    env: dict,
    extra: Sequence[str] = (),
    procs: int = 1,
) -> float:
    """Train one detector with tools/train_net.py (``procs`` processes; the command of
    :func:`detector_command`) and return its final box AP; a finished run in ``out`` is
    reused unless it is :func:`stale` (then it is deleted and trained again)."""
    cmd = detector_command(config, out, seed, teacher, quick, extra, procs)
    if not quick and finished(out):
        why = stale(out, config, cmd[cmd.index("SEED") :], teacher)
        if why is None:
            log(f"{label}, seed {seed}: cached run, AP {final_ap(out):.2f}")
            return final_ap(out)
        log(f"{label}, seed {seed}: the cached run is stale ({why}): training it again")
        shutil.rmtree(out)
    log(f"{label}, seed {seed}")
    t0 = time.time()
    if quick:  # toy runs: the same main, without paying the imports in each process
        from detectron2.engine.launch import _find_free_port

        os.makedirs(out, exist_ok=True)
        url = f"tcp://127.0.0.1:{_find_free_port()}"
        logs = [os.path.join(out, f"stdout.rank{rank}.txt") for rank in range(procs)]
        calls = [(cmd[2:], env, logs[rank], rank, url) for rank in range(procs)]
        for log_file, error in zip(logs, in_fresh_processes(_train_net_main, calls)):
            if error is not None:
                tail = open(log_file).read()[-3000:]
                raise RuntimeError(f"{' '.join(cmd)} failed:\n{tail}\n{error}")
    else:
        proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True)
        if proc.returncode != 0:
            raise RuntimeError(f"{' '.join(cmd)} failed:\n{proc.stderr[-3000:]}")
    ap = final_ap(out)
    log(f"  AP {ap:.2f} ({time.time() - t0:.0f} s)")
    # the periodic checkpoints of a finished run: only model_final.pth is reused (dozens of
    # runs' intermediate checkpoints filled this machine's disk)
    for name in os.listdir(out):
        if name.startswith("model_0") and name.endswith(".pth"):
            os.remove(os.path.join(out, name))
    return ap


#: what the process server of :func:`in_fresh_process` imports once, before any work
_PRELOAD = ["luminet_det.cli.train", "benchmarks.step_cost"]
_SERVER = None


def in_fresh_processes(fn: Callable, calls: Sequence[tuple]) -> list:
    """``fn(*args)`` for each ``args`` in ``calls``, at once, each in a process of its own (as
    a subprocess would run it) but forked from a server (multiprocessing's ``forkserver``)
    that has imported torch, detectron2 and luminet_det once: a toy run then costs its work,
    not the 7 s of imports on a small CPU. The server starts at the first call with this
    process's environment and does no torch work itself, so its children start clean.
    ``fn`` must be a module-level function. Returns the results in order."""
    global _SERVER
    if _SERVER is None:
        _SERVER = multiprocessing.get_context("forkserver")
        _SERVER.set_forkserver_preload(_PRELOAD)
    with ProcessPoolExecutor(len(calls), mp_context=_SERVER, max_tasks_per_child=1) as pool:
        futures = [pool.submit(fn, *args) for args in calls]
        return [f.result() for f in futures]


def in_fresh_process(fn: Callable, *args):
    """:func:`in_fresh_processes` of one call."""
    return in_fresh_processes(fn, [args])[0]


def _train_net_main(
    argv: List[str], env: dict, log_file: str, rank: int = 0, url: str = ""
) -> Optional[str]:
    """tools/train_net.py's ``main`` on ``argv``, its output into ``log_file``: in this
    process, or as process ``rank`` of ``--num-gpus`` joined at ``url`` (what detectron2's
    ``launch`` runs in each process it spawns). None, or the traceback of what went wrong
    (raised by the caller with the log's tail)."""
    os.environ.clear()
    os.environ.update(env)
    os.chdir(ROOT)  # as the subprocess of a full run
    with open(log_file, "w") as f:
        os.dup2(f.fileno(), 1)
        os.dup2(f.fileno(), 2)
        try:
            from detectron2.engine.launch import _distributed_worker

            from luminet_det.cli.train import argument_parser, main

            args = argument_parser().parse_args(argv)
            if args.num_gpus == 1:
                main(args)
            else:
                # a toy run takes seconds: a peer that died fails this one within minutes
                # (not after the default half hour in a collective)
                timeout = datetime.timedelta(minutes=5)
                n = args.num_gpus
                _distributed_worker(rank, main, n, n, 0, url, (args,), timeout=timeout)
        except BaseException:  # SystemExit of a refused config included
            return traceback.format_exc()
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
    return None
