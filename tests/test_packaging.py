"""Packaging: kernels/ and pipelines/ import as mambaseq.kernels / mambaseq.pipelines from an editable
install and from a built wheel, and `import mambaseq` (with the model and ops) never imports triton."""
import os
import subprocess
import sys
from pathlib import Path

import pytest

import mambaseq

REPO = Path(__file__).resolve().parents[1]


def python(code: str, cwd: Path, pythonpath: str | None = None) -> str:
    env = dict(os.environ)
    env.pop("PYTHONPATH", None)
    if pythonpath:
        env["PYTHONPATH"] = pythonpath
    done = subprocess.run([sys.executable, "-c", code], cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


def test_import_does_not_pull_in_triton(tmp_path):
    out = python("import sys, mambaseq, mambaseq.model, mambaseq.ops, mambaseq.checkpoint, mambaseq.cli; "
                 "print('triton' in sys.modules)", cwd=tmp_path)
    assert out == "False"


def test_installed_package_maps_kernels_and_pipelines(tmp_path):
    """Whatever install this environment has (CI: editable), the two folders resolve inside mambaseq."""
    out = python("import mambaseq.kernels as k, mambaseq.pipelines as p; print(k.__file__); print(p.__file__)",
                 cwd=tmp_path)
    kernels_file, pipelines_file = out.splitlines()
    assert Path(kernels_file).parent.name in ("kernels",) and Path(pipelines_file).parent.name == "pipelines"


def test_wheel_ships_kernels_and_pipelines(tmp_path):
    if not (REPO / "pyproject.toml").is_file():
        pytest.skip("not running from a source tree")
    wheels = tmp_path / "wheels"
    build = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(wheels), str(REPO)],
                           capture_output=True, text=True, timeout=600)
    assert build.returncode == 0, build.stderr
    wheel, = wheels.glob("mambaseq-*.whl")
    site = tmp_path / "site"
    install = subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", "-q", "--target", str(site),
                              str(wheel)], capture_output=True, text=True, timeout=300)
    assert install.returncode == 0, install.stderr
    out = python("import mambaseq, mambaseq.kernels, mambaseq.pipelines.pretrain, mambaseq.pipelines.demo as d; "
                 "print(mambaseq.__file__); print(mambaseq.kernels.__file__); print(d.RECIPES / 'demo_pretrain.json')",
                 cwd=tmp_path, pythonpath=str(site))
    for line in out.splitlines():
        assert line.startswith(str(site)), out
    assert Path(out.splitlines()[-1]).is_file()  # the demo recipe travels as package data
    assert mambaseq.__version__ in wheel.name
