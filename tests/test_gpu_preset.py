"""The notebooks' ``gpu`` preset (issue 28): chosen on CUDA by the notebooks and never by the
command line, on the data the machine has, and sized to about 5 minutes a notebook."""
import json
from dataclasses import replace

import pytest
import torch

import nas_tutorial as nt
from nas_tutorial import config, data, pc_darts, pnas, spos
from nas_tutorial.run import gpu_budget as gb
from nas_tutorial.run import records

from gpu_preset_tiny import tiny_presets

CIFAR_FILES = [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]


@pytest.fixture
def gpu_machine(monkeypatch):
    monkeypatch.delenv("NAS_TUTORIAL_PRESET", raising=False)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)


@pytest.fixture
def cifar_on_disk(tmp_path, monkeypatch):
    folder = tmp_path / "cifar-10-batches-py"
    folder.mkdir()
    for name in CIFAR_FILES:
        (folder / name).write_bytes(b"")
    monkeypatch.setenv("NAS_TUTORIAL_DATA", str(tmp_path))
    return tmp_path


@pytest.fixture
def no_cifar(tmp_path, monkeypatch):
    monkeypatch.setenv("NAS_TUTORIAL_DATA", str(tmp_path))


def test_notebooks_pick_gpu_on_cuda_and_full_only_when_named(gpu_machine, monkeypatch):
    assert nt.notebook_preset().name == "gpu"
    assert nt.notebook_preset(device="cpu").name == "quick"
    assert nt.notebook_preset("full").name == "full"
    assert nt.get_preset().name == "full"  # the command line keeps the papers' settings
    monkeypatch.setenv("NAS_TUTORIAL_PRESET", "full")
    assert nt.notebook_preset().name == "full"
    monkeypatch.setenv("NAS_TUTORIAL_PRESET", "nope")
    with pytest.raises(ValueError, match="unknown preset 'nope'; choose one of quick, full, gpu"):
        nt.notebook_preset()


def test_notebooks_pick_quick_on_a_cpu(monkeypatch):
    monkeypatch.delenv("NAS_TUTORIAL_PRESET", raising=False)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert nt.notebook_preset().name == "quick"


def test_on_disk_needs_every_cifar_file(tmp_path):
    assert not data.on_disk("cifar10", tmp_path)
    folder = tmp_path / "cifar-10-batches-py"
    folder.mkdir()
    for name in CIFAR_FILES[:-1]:
        (folder / name).write_bytes(b"")
    assert not data.on_disk("cifar10", tmp_path)  # no test_batch yet
    (folder / "test_batch").write_bytes(b"")
    assert data.on_disk("cifar10", tmp_path)
    assert data.on_disk("digits", tmp_path) and data.on_disk("synthetic", tmp_path)
    with pytest.raises(ValueError, match="unknown dataset 'imagenet'"):
        data.on_disk("imagenet")


def _datasets():
    return {"preset": nt.get_preset("gpu").dataset, "pnas": pnas.get_config("gpu").dataset,
            "pc-darts": pc_darts.get_config("pc-darts", "gpu").dataset,
            "darts": pc_darts.get_config("darts", "gpu").dataset,
            "spos": spos.get_config("gpu").dataset}


def test_gpu_preset_reads_cifar10_when_it_is_on_disk(cifar_on_disk):
    assert set(_datasets().values()) == {"cifar10"}
    assert spos.get_config("gpu").supernet.in_channels == 3


def test_gpu_preset_falls_back_to_fashion_mnist_when_cifar10_is_not_on_disk(no_cifar):
    assert set(_datasets().values()) == {"fashion_mnist"}
    cfg = spos.get_config("gpu")
    assert cfg.supernet.in_channels == 1 and cfg.image_size == cfg.supernet.image_size == 32
    # the FLOPs budget lies inside the space either way
    for channels in (1, 3):
        lo, hi = spos.space_range(replace(cfg.supernet, in_channels=channels))["flops"]
        assert lo < cfg.flops_limit < hi
    # asked for by name, the dataset stays; the other presets never change theirs
    assert pc_darts.get_config("pc-darts", "gpu", dataset="cifar10").dataset == "cifar10"
    assert nt.get_preset("full").dataset == "cifar10"
    assert spos.get_config("full").dataset == "cifar10"


def test_the_spos_supernet_takes_its_input_and_output_sizes_from_the_data():
    assert spos.get_config("full", dataset="cifar100").supernet.num_classes == 100
    assert spos.get_config("full", dataset="fashion_mnist").supernet.in_channels == 1
    cfg = spos.get_config("full", dataset="cifar10")
    assert (cfg.supernet.in_channels, cfg.supernet.num_classes) == (3, 10)
    assert cfg.supernet == spos.CIFAR  # the papers' supernet, unchanged


def test_gpu_preset_shows_more_than_quick():
    quick, gpu = config.PRESETS["quick"], config.PRESETS["gpu"]
    assert gpu.channels > quick.channels and gpu.layers > quick.layers
    assert gpu.train.epochs > quick.train.epochs
    pq, pg = pc_darts.PRESETS["quick"], pc_darts.PRESETS["gpu"]
    assert pg.C > pq.C and pg.layers > pq.layers and pg.train_images > pq.train_images
    assert pg.epochs > pq.epochs
    sq, sg = spos.PRESETS["quick"], spos.PRESETS["gpu"]
    assert sg.supernet.num_layers > sq.supernet.num_layers and sg.image_size > sq.image_size
    nq, ng = pnas.PNAS_PRESETS["quick"], pnas.PNAS_PRESETS["gpu"]
    assert ng.layers > nq.layers and ng.channels > nq.channels
    assert ng.ops == nq.ops  # the pnas table still names every cell notebook 02 trains


# -- the budget -----------------------------------------------------------------------------
def test_the_recorded_budget_is_for_todays_presets_and_fits_five_minutes():
    run = gb.latest()
    assert run is not None, "no gpu-budget record: python benchmarks/gpu_budget.py"
    pay = run["payload"]
    assert pay["config"] == gb.config_fingerprint("gpu", pay["dataset"]), (
        "the gpu presets changed since the budget was recorded: run benchmarks/gpu_budget.py")
    units = {k: v["seconds"] for k, v in pay["units"].items()}
    assert set(units) == set(gb.UNITS)
    now = gb.budget(units, "gpu", pay["dataset"])  # today's notebooks' fixed parts
    assert set(now) == {p.stem for p in gb.NOTEBOOKS.glob("[0-9][0-9]_*.ipynb")}
    for nb, row in now.items():
        assert row["work"] == pay["notebooks"][nb]["work"], nb
        assert row["total_s"] <= gb.GOAL_S, f"{nb}: {row['total_s']:.0f} s on the gpu preset"


def _tiny(monkeypatch):
    """Every method's gpu preset at a size a unit test runs in seconds."""
    for (module, name), cfg in tiny_presets().items():
        monkeypatch.setitem(getattr(module, name), "gpu", cfg)


def test_the_counted_work_is_what_the_loops_run(monkeypatch):
    """The work of notebooks 00, 03 and 04 counted from the presets equals the optimizer
    steps the training loop, the search and the supernet training take (sizes the batches
    do not divide: the last partial batch is dropped)."""
    _tiny(monkeypatch)
    counts = gb.work("gpu")
    steps = {"weights": 0, "arch": 0}
    sgd_step = torch.optim.SGD.step
    arch_step = pc_darts.Architect.step

    def count_sgd(self, *a, **k):
        steps["weights"] += 1
        return sgd_step(self, *a, **k)

    def count_arch(self, *a, **k):
        steps["arch"] += 1
        return arch_step(self, *a, **k)

    monkeypatch.setattr(torch.optim.SGD, "step", count_sgd)
    monkeypatch.setattr(pc_darts.Architect, "step", count_arch)
    p = nt.get_preset("gpu")
    ds = nt.data.load(p.dataset, size=p.image_size, n=p.train_images)
    model = nt.NetworkCIFAR(nt.GENOTYPES["PC_DARTS"], p.channels, 10, p.layers, in_channels=1)
    nt.train(model, ds, replace(p.train, seed=0), progress=False)
    assert steps["weights"] == counts["00_getting_started"]["net_step"]
    steps.update(weights=0, arch=0)
    cfg = replace(pc_darts.get_config("pc-darts", "gpu"), fused=False)  # plain SGD steps
    pc_darts.search(cfg, device="cpu", progress=False)
    work = counts["03_pc_darts"]
    assert steps["arch"] == work["search_step"]
    assert steps["weights"] == work["search_step"] + work["search_weight_step"]
    steps.update(weights=0)
    o = spos.get_config("gpu")
    train_ds, _ = spos.load_data(o, "cpu")
    spos.train_supernet(spos.Supernet(o.supernet), train_ds, o, "cpu", progress=False)
    assert steps["weights"] == counts["04_spos"]["supernet_step"] == 2 * (70 // 16)


def test_estimated_units_count_real_operators(monkeypatch):
    """Each unit is counted through the library's own loops: every kind dispatches
    operators, and a search step (architecture step, then weights) more than a warm-up
    step (weights only)."""
    _tiny(monkeypatch)
    units = gb.estimate_units("gpu", batch=8, progress=lambda *_: None)
    assert set(units) == set(gb.UNITS)
    assert all(u["ops"] > 50 for u in units.values()), units
    assert units["search_step"]["ops"] > 1.3 * units["search_weight_step"]["ops"]
    assert units["net_step"]["ops"] > units["net_eval"]["ops"]  # a backward pass more
    assert units["net_step"]["seconds"] == pytest.approx(units["net_step"]["ops"] * gb.S_PER_OP,
                                                         rel=0.01)


def test_fixed_seconds_leave_the_preset_cells_out(tmp_path):
    def cell(start, end, tags=()):
        return {"cell_type": "code", "source": "", "outputs": [], "metadata": {
            "tags": list(tags), "execution": {"iopub.execute_input": f"2026-12-04T10:00:{start:02d}Z",
                                              "shell.execute_reply": f"2026-12-04T10:00:{end:02d}Z"}}}
    nb = {"cells": [cell(0, 3), cell(3, 50, ["preset"]), cell(50, 52),
                    {"cell_type": "markdown", "source": "", "metadata": {}}],
          "metadata": {}, "nbformat": 4, "nbformat_minor": 5}
    (tmp_path / "09_x.ipynb").write_text(json.dumps(nb))
    assert gb.fixed_seconds("09_x", tmp_path) == pytest.approx(5.0)


def test_a_supernet_a_notebook_trained_is_kept_and_found_again(monkeypatch, tmp_path):
    _tiny(monkeypatch)
    monkeypatch.setattr(records, "REPO", tmp_path)
    monkeypatch.delenv("NAS_TUTORIAL_RUNS", raising=False)
    cfg = spos.get_config("gpu")
    train_ds, _ = spos.load_data(cfg, "cpu")
    first, _, source = records.load_supernet(cfg, train_ds, "cpu", progress=False)
    assert source is None  # trained now ...
    kept = records.notebook_folder(cfg) / "supernet.pt"
    assert kept.is_file() and kept.parent.parent == tmp_path / "runs"  # ... and kept
    assert kept.parent.name.startswith("notebook-spos-gpu-seed0-")  # apart from the CLI's
    again, history, source = records.load_supernet(cfg, train_ds, "cpu", progress=False)
    assert source == kept.resolve() and history["epoch"] == [1, 2]
    for (k, a), b in zip(first.state_dict().items(), again.state_dict().values()):
        assert torch.equal(a, b), k
    # other training settings get their own folder: never the old file, never an error
    longer = replace(cfg, epochs=3)
    assert records.notebook_folder(longer) != records.notebook_folder(cfg)
    assert records.notebook_folder(replace(cfg, population=9)) == records.notebook_folder(cfg)
    _, history, source = records.load_supernet(longer, train_ds, "cpu", progress=False)
    assert source is None and history["epoch"] == [1, 2, 3]


def test_a_supernet_trains_where_nothing_can_be_kept(monkeypatch, tmp_path, capsys):
    _tiny(monkeypatch)
    blocked = tmp_path / "file"
    blocked.write_text("")  # a folder cannot be made inside a file (as in a read-only checkout)
    monkeypatch.setenv("NAS_TUTORIAL_RUNS", str(blocked))
    cfg = spos.get_config("gpu")
    train_ds, _ = spos.load_data(cfg, "cpu")
    _, history, source = records.load_supernet(cfg, train_ds, "cpu", progress=False)
    assert source is None and history["epoch"] == [1, 2]
    line = capsys.readouterr().out.strip()
    assert line.startswith("cannot keep the supernet in ") and "NAS_TUTORIAL_RUNS" in line
    assert len(line.splitlines()) == 1
