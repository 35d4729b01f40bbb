"""benchmarks/step_profile.py: its readings and its NMS timer (the measurement itself runs
as a benchmark, not here)."""

import torch

from benchmarks import step_profile


def row(model, threads, pre_nms, step):
    phases = {f"{k}_ms": 1.0 for k in step_profile.PHASES}
    return {
        "model": model,
        "threads": threads,
        "pre_nms_topk_train": pre_nms,
        "step_ms": step,
        **phases,
    }


def test_readings_are_ratios_of_the_measured_steps():
    rows = [
        row(m, t, n, step)
        for m, base in zip(step_profile.MODELS, (1000.0, 400.0))
        for t, n, step in ((1, 1000, base), (2, 1000, base / 2), (2, 250, base / 2.5))
    ]
    teacher, student = step_profile.ratios(rows)
    assert "a second thread makes the step 2.00× faster (1000 → 500 ms)" in teacher
    assert "pre-NMS 250 instead of 1000 (2 threads) 1.25× (500 → 400 ms)" in teacher
    assert "(400 → 200 ms)" in student and "1.25× (200 → 160 ms)" in student
    lines = step_profile.table(rows)
    assert lines[2].startswith("| teacher R-50-FPN | 1 | 1000 | 1000 | 1 | 1 | 1 (1) | 1 |")
    assert len(lines) == 2 + len(rows)


def test_nms_timer_counts_the_rpn_nms_and_restores_it():
    from detectron2.modeling.proposal_generator import proposal_utils

    original = proposal_utils.batched_nms
    timer = step_profile.Timer.__new__(step_profile.Timer)
    timer.s = {}
    boxes = torch.tensor([[0.0, 0, 10, 10], [1, 1, 11, 11], [50, 50, 60, 60]])
    scores = torch.tensor([0.9, 0.8, 0.7])
    with timer.nms():
        keep = proposal_utils.batched_nms(boxes, scores, torch.zeros(3, dtype=torch.long), 0.5)
    assert keep.tolist() == [0, 2]  # the wrapped NMS still suppresses the overlapping box
    assert timer.s["nms"] > 0
    assert proposal_utils.batched_nms is original


def test_results_header_of_the_stand_alone_measurements():
    import os
    import time

    from benchmarks.results_io import header

    lines = header("2026-12-02-x", "abc1234", "python x.py", time.time() - 120, ", 2 threads")
    assert lines[:2] == ["# Benchmark: 2026-12-02-x", ""]
    assert lines[2].startswith("- date: 20")
    assert lines[3] == f"- machine: {os.cpu_count()} cores, torch {torch.__version__}, 2 threads"
    assert lines[4:] == ["- commit: abc1234", "- command: `python x.py`", "- wall time: 2.0 min"]
