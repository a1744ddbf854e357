"""environment.yml (conda) lists the same dependencies as pyproject.toml."""
import re
import tomllib
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent
CONDA_NAMES = {"torch": "pytorch", "graphviz": "python-graphviz"}  # PyPI -> conda-forge


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
