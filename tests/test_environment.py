"""environment.yml (conda) lists the same dependencies as pyproject.toml."""
import os
import re
import tomllib
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent
CONDA_NAMES = {"torch": "pytorch", "graphviz": "python-graphviz",  # PyPI -> conda-forge
               "kaleido": "python-kaleido"}


def _name(spec):
    return re.split(r"[<>=!~ \[]", spec, maxsplit=1)[0].strip().lower()


def test_environment_yml_matches_pyproject():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    pip_deps = project["dependencies"] + project["optional-dependencies"]["dev"]
    wanted = {CONDA_NAMES.get(_name(d), _name(d)): d for d in pip_deps}
    env = yaml.safe_load((ROOT / "environment.yml").read_text())
    conda = {_name(d): d for d in env["dependencies"] if isinstance(d, str)}
    missing = sorted(set(wanted) - set(conda))
    assert not missing, f"environment.yml lacks {missing}"
    # the same lower bounds, so conda and pip users get the same versions
    for name, spec in wanted.items():
        pip_bound = re.findall(r">=\s*([\w.]+)", spec)
        assert re.findall(r">=\s*([\w.]+)", conda[name]) == pip_bound, name
    assert "graphviz" in conda, "the graphviz binaries (dot) must be in environment.yml"
    extra = sorted(set(conda) - set(wanted) - {"python", "pip", "graphviz"})
    assert not extra, f"environment.yml has {extra}, pyproject.toml does not"


def _fake_bin(folder, **scripts):
    folder.mkdir()
    for name, body in scripts.items():
        path = folder / name
        path.write_text("#!/bin/sh\n" + body + "\n")
        path.chmod(0o755)
    return folder


@pytest.mark.parametrize("apt", ["fails", "absent"])
def test_setup_without_fashion_mnist_says_so_in_one_line(tmp_path, apt):
    """`make setup` installs dataset-fashion-mnist through apt-get; when that is impossible
    it prints one line naming what to do and goes on (exit 0, no hang)."""
    import shutil
    import subprocess

    scripts = {"dpkg": "exit 1"}  # the package is not installed
    if apt == "fails":
        scripts["apt-get"] = f"touch {tmp_path}/apt-called; exit 100"
    fake = _fake_bin(tmp_path / "bin", **scripts)
    # a PATH with the fake tools and the shell utilities make needs, but no real apt-get
    tools = tmp_path / "tools"
    tools.mkdir()
    for tool in ("sh", "id", "touch", "make", "timeout", "echo", "test", "["):
        found = shutil.which(tool)
        if found:
            (tools / tool).symlink_to(found)
    work = tmp_path / "work"
    work.mkdir()
    proc = subprocess.run(["make", "-s", "-f", str(ROOT / "Makefile"), "-C", str(work),
                           "fashion-mnist"], capture_output=True, text=True, timeout=60,
                          env={"PATH": f"{fake}:{tools}"})
    lines = [line for line in proc.stdout.splitlines() if line.strip()]
    assert proc.returncode == 0, proc.stderr
    assert len(lines) == 1 and "dataset-fashion-mnist" in lines[0] and "digits" in lines[0]
    assert (tmp_path / "apt-called").exists() == (apt == "fails" and os.getuid() == 0)
