"""Every notebook that runs preset work executes on the ``gpu`` preset's code paths (what a
class on GPU machines runs: no ground-truth table for its children, supernets trained and
kept live, fused cells), on tiny copies of those presets (``gpu_preset_tiny``) so that a CPU
runs each in seconds. The quick preset's run is nbval's (``make test``)."""
import os
from pathlib import Path

import pytest

nbformat = pytest.importorskip("nbformat")
nbclient = pytest.importorskip("nbclient")

REPO = Path(__file__).resolve().parent.parent
# digits (grey, like Fashion-MNIST); 04 also on synthetic images (three channels, like CIFAR-10)
CASES = [(name, "digits") for name in ("00_getting_started", "02_pnas", "03_pc_darts",
                                       "04_spos", "05_compare")] + [("04_spos", "synthetic")]


@pytest.fixture(scope="module")
def kept(tmp_path_factory):
    """One folder for the supernets the notebooks keep: 04 trains one, 05 finds it (with the
    fitnesses 04 measured)."""
    return tmp_path_factory.mktemp("repo")


@pytest.mark.parametrize("name, dataset", CASES)
def test_notebook_runs_on_the_gpu_preset(name, dataset, kept, monkeypatch):
    monkeypatch.setenv("NAS_TUTORIAL_PRESET", "gpu")
    monkeypatch.setenv("NAS_TUTORIAL_STATIC", "1")
    monkeypatch.setenv("NAS_TUTORIAL_RUNS", str(kept / "runs"))
    nb = nbformat.read(REPO / "notebooks" / f"{name}.ipynb", as_version=4)
    setup = (f"import sys; sys.path.insert(0, {str(REPO / 'tests')!r})\n"
             f"from gpu_preset_tiny import shrink; shrink({dataset!r})\n"
             "from pathlib import Path\n"
             f"from nas_tutorial.run import records; records.REPO = Path({str(kept)!r})")
    nb.cells.insert(0, nbformat.v4.new_code_cell(setup))
    client = nbclient.NotebookClient(nb, timeout=300, kernel_name="python3",
                                     resources={"metadata": {"path": str(REPO / "notebooks")}})
    try:
        client.execute()
    except nbclient.exceptions.CellExecutionError as e:
        pytest.fail(f"{name} on the gpu preset: {str(e).splitlines()[-1][:300]}")
    first = next(c for c in nb.cells[1:] if c.cell_type == "code")
    shown = "".join(o.get("text", "") for o in first.outputs)
    assert "gpu" in shown, shown  # the notebook says which preset it runs
