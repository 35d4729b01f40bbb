"""tools/demo.py (`make demo`): the students trained at once, its progress line, the teacher
check. Subprocesses are tiny Python scripts standing in for tools/train_net.py."""

import importlib.util
import json
import math
import os
import sys
import textwrap
from types import SimpleNamespace

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(scope="module")
def demo():
    spec = importlib.util.spec_from_file_location("demo", os.path.join(ROOT, "tools", "demo.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def write_rows(path, rows, tail=""):
    with open(path, "a") as f:
        f.write("".join(json.dumps(r) + "\n" for r in rows) + tail)


def test_iterations_done_reads_rows_past_the_offset(demo, tmp_path):
    metrics = str(tmp_path / "metrics.json")
    assert demo.iterations_done(metrics, 0) == 0  # no file yet
    write_rows(metrics, [{"iteration": 19, "loss": 1.0}, {"iteration": 39}])
    offset = os.path.getsize(metrics)  # an earlier run's rows (detectron2 appends)
    assert demo.iterations_done(metrics, 0) == 40
    assert demo.iterations_done(metrics, offset) == 0
    # a row being written (no closing brace yet) is skipped, not an error
    write_rows(metrics, [{"iteration": 19}, {"iteration": 59, "bbox/AP": 3.0}], '{"iterat')
    assert demo.iterations_done(metrics, offset) == 60


def test_progress_line_takes_the_slowest_runs_eta(demo, tmp_path):
    jobs = []
    for label, done, total in (("alone", 50, 200), ("LumiNet", 100, 200)):
        metrics = str(tmp_path / f"{label}.json")
        write_rows(metrics, [{"iteration": done - 1}])
        jobs.append({"label": label, "metrics": metrics, "offset": 0, "total": total})
    line = demo.progress(jobs, 60.0)
    # alone: 60 s for 50 iterations, 150 left -> 180 s; LumiNet: 60 s for 100, 100 left -> 60 s
    assert line.startswith("alone 50/200, LumiNet 100/200 iterations · 1:00 elapsed")
    assert "training ETA 3:00" in line
    jobs.append({"label": "new", "metrics": str(tmp_path / "none.json"), "offset": 0, "total": 5})
    assert "training ETA ?" in demo.progress(jobs, 60.0)  # a run with nothing logged yet


SCRIPT = """
import json, os, sys, time
out = sys.argv[1]
with open(os.path.join(out, "started"), "w") as f:
    f.write(f"{{time.time()}} {{os.getpid()}} {{os.environ['OMP_NUM_THREADS']}}")
print("building the model")
time.sleep({sleep})
if {fail}:
    print("boom: bad config", flush=True)
    sys.exit(3)
with open(os.path.join(out, "metrics.json"), "a") as f:
    f.write(json.dumps({{"iteration": 2, "bbox/AP": 5.0}}) + "\\n")
with open(os.path.join(out, "finished"), "w") as f:
    f.write(str(time.time()))
"""


@pytest.fixture
def fake_runs(demo, tmp_path, monkeypatch):
    """demo.planned/train_command replaced: run ``label`` executes SCRIPT with its settings."""
    scripts = {}

    def planned(config, fresh):
        out = str(tmp_path / config)
        cfg = SimpleNamespace(SOLVER=SimpleNamespace(MAX_ITER=3))
        return cfg, out, os.path.join(out, "model_final.pth"), False

    def train_command(config):
        path = tmp_path / f"{config}.py"
        path.write_text(textwrap.dedent(SCRIPT.format(**scripts[config])))
        return [sys.executable, str(path), str(tmp_path / config)]

    monkeypatch.setattr(demo, "planned", planned)
    monkeypatch.setattr(demo, "train_command", train_command)
    monkeypatch.setattr(demo.os, "cpu_count", lambda: 4)
    return scripts


def test_students_train_at_once_on_half_the_cores_each(demo, fake_runs, tmp_path):
    fake_runs.update(a={"sleep": 1.5, "fail": False}, b={"sleep": 1.5, "fail": False})
    done = demo.train_together([("student alone", "a"), ("LumiNet", "b")], fresh=False, period=1)
    assert done == {c: (str(tmp_path / c), str(tmp_path / c / "model_final.pth")) for c in "ab"}
    started = {c: (tmp_path / c / "started").read_text().split() for c in "ab"}
    finished = {c: float((tmp_path / c / "finished").read_text()) for c in "ab"}
    assert all(s[2] == "2" for s in started.values())  # 4 cores / 2 runs
    # concurrent: each started before the other finished
    assert float(started["a"][0]) < finished["b"] and float(started["b"][0]) < finished["a"]
    assert "building the model" in (tmp_path / "a" / "console.txt").read_text()


def test_one_failed_run_stops_the_other_and_shows_its_output(demo, fake_runs, tmp_path, capsys):
    fake_runs.update(a={"sleep": 0.5, "fail": True}, b={"sleep": 60, "fail": False})
    with pytest.raises(SystemExit, match=r"the student alone run failed \(exit code 3\)"):
        demo.train_together([("student alone", "a"), ("LumiNet", "b")], fresh=False)
    assert "boom: bad config" in capsys.readouterr().err
    pid = int((tmp_path / "b" / "started").read_text().split()[1])
    assert not os.path.exists(f"/proc/{pid}")  # the other run was stopped and reaped
    assert not (tmp_path / "b" / "finished").exists()


def test_cached_runs_are_not_started(demo, monkeypatch):
    calls = []
    monkeypatch.setattr(demo, "planned", lambda c, f: (None, "out/" + c, "out/" + c + "/m", True))
    monkeypatch.setattr(demo.subprocess, "Popen", lambda *a, **k: calls.append(a))
    assert demo.train_together([("x", "a")], fresh=False) == {"a": ("out/a", "out/a/m")}
    assert calls == []


def test_a_weak_or_unevaluated_teacher_stops_the_demo(demo):
    ckpt = os.path.join(ROOT, "output", "t", "model_final.pth")
    assert demo.check_teacher({"bbox/AP": 40.0}, ckpt) == {"bbox/AP": 40.0}
    for row in (None, {"bbox/AP": 0.5}, {"bbox/AP": math.nan}, {"iteration": 9}):
        with pytest.raises(SystemExit, match=r"output/t/model_final.pth reaches box AP .* below"):
            demo.check_teacher(row, ckpt)


@pytest.mark.parametrize(
    "cached, rows, commands, ok",
    [
        # a cached good teacher: nothing trained
        (True, [{"bbox/AP": 30.0}], [], True),
        # trained, collapsed (no detections), then good with the next seed
        (False, [{"bbox/AP": math.nan}, {"bbox/AP": 25.0}], [[], ["SEED", "5"]], True),
        # a cached collapsed teacher is trained again with the next seed
        (True, [{"bbox/AP": 0.2}, {"bbox/AP": 31.0}], [["SEED", "5"]], True),
        # three collapsed seeds: stop with the message
        (False, [{"bbox/AP": math.nan}] * 3, [[], ["SEED", "5"], ["SEED", "6"]], False),
    ],
)
def test_a_collapsed_teacher_is_trained_again_with_the_next_seed(
    demo, monkeypatch, cached, rows, commands, ok
):
    import luminet_det.runio

    out = os.path.join(ROOT, "output", "t")
    cfg = SimpleNamespace(SEED=4)
    monkeypatch.setattr(demo, "planned", lambda c, f: (cfg, out, out + "/model_final.pth", cached))
    monkeypatch.setattr(demo, "train_command", lambda c: ["train", c])
    ran, results = [], list(rows)
    monkeypatch.setattr(demo, "run", lambda cmd: ran.append(cmd[2:]))
    monkeypatch.setattr(luminet_det.runio, "last_box_ap", lambda o: results.pop(0))
    if ok:
        assert demo.train_teacher(fresh=False) == (out, out + "/model_final.pth", rows[-1])
    else:
        with pytest.raises(
            SystemExit, match=r"reaches box AP nan .* a seed not tried yet .* SEED 3\)"
        ):
            demo.train_teacher(fresh=False)
    assert ran == commands and results == []
