"""`pip install` gives the commands: a wheel built with `python -m build`, installed without
its dependencies into a throw-away folder over the current environment, runs each console
command's --help from the installed copy (not from this checkout)."""

import glob
import json
import os
import subprocess
import sys

import pytest
from tiny import ROOT

COMMANDS = {
    "luminet-train": "--config-file",
    "luminet-lazy-train": "--check-teacher",
    "luminet-export": "--format",
    "luminet-convert": "--arch",
    "luminet-cls": "{train,eval}",
    "luminet-cls-report": "--teacher",
    "luminet-plot": "--run",
    "luminet-perception": "{detector,classifier}",
}


@pytest.fixture(scope="module")
def installed(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("wheel")
    build = subprocess.run(
        [sys.executable, "-m", "build", "--wheel", "--no-isolation", "--outdir", str(tmp), ROOT],
        capture_output=True,
        text=True,
    )
    assert build.returncode == 0, build.stdout[-2000:] + build.stderr[-2000:]
    wheel = glob.glob(str(tmp / "luminet_det-*.whl"))
    assert len(wheel) == 1, os.listdir(tmp)
    site = tmp / "site"
    install = subprocess.run(
        [sys.executable, "-m", "pip", "install", "--no-deps", "--target", str(site), wheel[0]],
        capture_output=True,
        text=True,
    )
    assert install.returncode == 0, install.stderr[-2000:]
    return site


def test_the_wheel_holds_the_package_and_declares_the_commands(installed):
    dist = glob.glob(str(installed / "luminet_det-*.dist-info"))[0]
    entry_points = open(os.path.join(dist, "entry_points.txt")).read()
    for command in COMMANDS:
        assert f"{command} = " in entry_points, entry_points
    requires = open(os.path.join(dist, "METADATA")).read()
    for package in ("matplotlib", "scikit-learn", "torch", "fvcore", "pycocotools"):
        assert f"Requires-Dist: {package}" in requires, package
    assert not glob.glob(str(installed / "tests")), "the tests are not part of the package"


#: runs each installed script in this one interpreter (the imports paid once): exit code and
#: output of ``<script> --help`` per command, as JSON
_RUN_ALL = """
import contextlib, io, json, runpy, sys
out = {}
for name, script in json.loads(sys.argv[1]).items():
    sys.argv, buffer = [script, "--help"], io.StringIO()
    with contextlib.redirect_stdout(buffer):
        try:
            runpy.run_path(script, run_name="__main__")
            code = 0
        except SystemExit as e:
            code = e.code
    out[name] = [code, buffer.getvalue()]
print(json.dumps(out))
"""


def test_the_installed_train_command_runs_quietly_from_the_installed_copy(installed):
    env = dict(os.environ, PYTHONPATH=str(installed))
    script = installed / "bin" / "luminet-train"
    proc = subprocess.run(
        [str(script), "--help"], capture_output=True, text=True, env=env, cwd=str(installed)
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert COMMANDS["luminet-train"] in proc.stdout, proc.stdout
    assert "Warning" not in proc.stderr, proc.stderr  # the commands hide known noise
    # and it ran the installed copy, not this checkout
    where = subprocess.run(
        [sys.executable, "-c", "import luminet_det; print(luminet_det.__file__)"],
        capture_output=True,
        text=True,
        env=env,
        cwd=str(installed),
    )
    assert where.stdout.strip().startswith(str(installed)), where.stdout


def test_each_installed_command_runs_its_help(installed):
    env = dict(os.environ, PYTHONPATH=str(installed))
    scripts = {c: str(installed / "bin" / c) for c in sorted(COMMANDS)}
    proc = subprocess.run(
        [sys.executable, "-c", _RUN_ALL, json.dumps(scripts)],
        capture_output=True,
        text=True,
        env=env,
        cwd=str(installed),
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "Warning" not in proc.stderr, proc.stderr
    results = json.loads(proc.stdout.splitlines()[-1])
    assert set(results) == set(COMMANDS)
    for command, (code, text) in results.items():
        assert code == 0 and COMMANDS[command] in text, (command, code, text[-1000:])
