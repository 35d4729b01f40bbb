"""benchmarks/run.py --quick keeps the benchmark code working (numbers are not asserted:
timings belong in benchmarks/results, never in tests)."""

import os
import subprocess
import sys


def test_bench_quick_writes_report_and_chart(tmp_path, root_dir):
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
        env=dict(os.environ, PYTHONWARNINGS="ignore"),
    )
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-4000:]
    md = open(tmp_path / "q.md").read()
    for section in (
        "Cost of the losses alone",
        "Cost of one training step",
        "built-in detection set",
        "built-in classification set",
    ):
        assert section in md, section
    for row in (
        "| LumiNet |",
        "| KD |",
        "| DKD |",
        "| student alone |",
        "| LumiNet+ReviewKD |",
        "| teacher alone |",
    ):
        assert row in md, row
    assert os.path.getsize(tmp_path / "q.png") > 1000
