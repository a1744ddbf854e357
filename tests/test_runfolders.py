"""Run folders and checkpoints are checked before any work: a refused run prints one line,
exits 2, creates nothing and leaves every file as it was (issue 16).

The work itself (data, training, the searches) is replaced by a stub that raises
:class:`Started`: a refusal never reaches it, an accepted run does, so these tests take
milliseconds and still fail when a check lets a bad run through.
"""
import json
import os
from dataclasses import asdict, replace
from pathlib import Path

import pytest
import torch

from nas_tutorial import pc_darts as pc
from nas_tutorial import pnas, spos
from nas_tutorial.run import folders as runfolders
from nas_tutorial.run import cli
from nas_tutorial.run.cli import main

SEARCHES = {"pc-darts": ["search", "pc-darts"], "darts": ["search", "darts"],
            "spos": ["search", "spos"], "pnas": ["search", "pnas"]}
VERBS = {**SEARCHES, "train": ["train", "PC_DARTS"]}


REAL = [(pc, "search", pc.search), (spos, "load_data", spos.load_data),
        (pnas, "search", pnas.search), (cli, "train_genotype", cli.train_genotype)]


class Started(Exception):
    """Raised where a run would start its work; not an expected error, so it propagates."""


@pytest.fixture(autouse=True)
def no_work(monkeypatch):
    seen = {}

    def stub(name):
        def started(*args, **kw):
            seen[name] = {"args": args, **kw}
            raise Started(name)
        return started

    monkeypatch.setattr(pc, "search", stub("pc-darts"))
    monkeypatch.setattr(spos, "load_data", stub("spos"))
    monkeypatch.setattr(pnas, "search", stub("pnas"))
    monkeypatch.setattr(cli, "train_genotype", stub("train"))
    return seen


def run(capsys, *argv):
    try:
        code = main(list(argv))
    except SystemExit as e:
        code = e.code
    out, err = capsys.readouterr()
    return code, out, err


def refused(capsys, argv, *words):
    """Run ``argv``, assert the one-line refusal (exit 2) holding ``words``; return it."""
    code, _, err = run(capsys, *argv)
    lines = err.strip().splitlines()
    assert code == 2 and len(lines) == 1, err
    assert lines[0].startswith("nas-tutorial: error: ") and "Traceback" not in err
    for w in words:
        assert w in lines[0], (w, lines[0])
    return lines[0]


def snapshot(folder: Path) -> dict:
    return {p.relative_to(folder).as_posix(): p.read_bytes()
            for p in sorted(folder.rglob("*")) if p.is_file()}


# -- new runs: --out --------------------------------------------------------------------------
@pytest.mark.parametrize("verb", VERBS)
def test_out_naming_a_file_is_refused_and_the_file_kept(verb, tmp_path, capsys):
    f = tmp_path / "notes.txt"
    f.write_text("mine")
    refused(capsys, VERBS[verb] + ["--preset", "quick", "--out", str(f)], str(f), "is a file")
    assert f.read_text() == "mine"


@pytest.mark.parametrize("verb", VERBS)
def test_out_under_a_file_is_refused_and_nothing_created(verb, tmp_path, capsys):
    f = tmp_path / "notes.txt"
    f.write_text("mine")
    out = f / "run"
    refused(capsys, VERBS[verb] + ["--preset", "quick", "--out", str(out)], "cannot create",
            str(f))
    assert f.read_text() == "mine" and sorted(os.listdir(tmp_path)) == ["notes.txt"]


@pytest.mark.parametrize("verb", VERBS)
def test_out_in_a_read_only_folder_is_refused_and_nothing_created(verb, tmp_path, capsys,
                                                                 monkeypatch):
    ro = tmp_path / "ro"
    ro.mkdir()
    real = os.access
    # tests run as root, which may write anywhere: the permission is what os.access says
    monkeypatch.setattr(os, "access", lambda p, mode: False if Path(p) == ro else real(p, mode))
    refused(capsys, VERBS[verb] + ["--preset", "quick", "--out", str(ro / "a" / "run")],
            "permission denied", str(ro))
    assert list(ro.iterdir()) == []


@pytest.mark.parametrize("verb, marker", [("pc-darts", "genotype.json"),
                                          ("darts", "checkpoint.pt"),
                                          ("spos", "summary.json"), ("pnas", "summary.json"),
                                          ("train", "history.json")])
def test_out_holding_a_run_is_refused_unless_overwrite(verb, marker, tmp_path, capsys,
                                                       no_work):
    out = tmp_path / "run"
    out.mkdir()
    (out / marker).write_text('{"finished": true}')
    (out / "notes.txt").write_text("mine")
    before = snapshot(out)
    refused(capsys, VERBS[verb] + ["--preset", "quick", "--out", str(out)], str(out),
            "already holds", marker, "--overwrite")
    assert snapshot(out) == before
    # --overwrite: the run starts; a search deletes the old run's files first (train once it
    # has something to write), and never a file of the user's
    with pytest.raises(Started):
        main(VERBS[verb] + ["--preset", "quick", "--out", str(out), "--overwrite"])
    if verb != "train":
        assert sorted(os.listdir(out)) == ["notes.txt"]
    assert (out / "notes.txt").read_text() == "mine"


def test_train_refuses_a_folder_that_is_not_empty(tmp_path, capsys):
    out = tmp_path / "run"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    refused(capsys, ["train", "PC_DARTS", "--out", str(out)], "not empty", "--overwrite")
    assert sorted(os.listdir(out)) == ["notes.txt"]


@pytest.mark.parametrize("verb", VERBS)
def test_a_new_or_empty_folder_is_accepted_and_not_created_before_the_work(verb, tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(Started):
        main(VERBS[verb] + ["--preset", "quick", "--out", str(empty)])
    with pytest.raises(Started):
        main(VERBS[verb] + ["--preset", "quick", "--out", str(tmp_path / "new")])
    assert not (tmp_path / "new").exists()


@pytest.mark.parametrize("verb", SEARCHES)
def test_a_refused_dataset_leaves_no_run_folder(verb, tmp_path, capsys, monkeypatch):
    from nas_tutorial.data import DatasetUnavailable

    for module, name, real in REAL:  # the searches run for real up to their data
        monkeypatch.setattr(module, name, real)

    def unavailable(*args, **kw):
        raise DatasetUnavailable("digits cannot be loaded here (test)")

    for module in (pc, spos, pnas):
        monkeypatch.setattr(module, "load", unavailable)
    out = tmp_path / "new"
    refused(capsys, VERBS[verb] + ["--preset", "quick", "--out", str(out)], "cannot be loaded")
    assert not out.exists()


def test_clear_deletes_run_files_and_their_temporary_copies_only(tmp_path):
    for name in ("checkpoint.pt", "supernet.pt", "checkpoint.json", "summary.json",
                 "curves.html", "history.json.tmp", "notes.txt", "data.csv"):
        (tmp_path / name).write_text("x")
    (tmp_path / "sub").mkdir()
    assert runfolders.clear(tmp_path) == ["checkpoint.json", "checkpoint.pt", "curves.html",
                                          "history.json.tmp", "summary.json", "supernet.pt"]
    assert sorted(os.listdir(tmp_path)) == ["data.csv", "notes.txt", "sub"]


# -- resumed runs -------------------------------------------------------------------------------
def _pc_checkpoint(folder: Path, method="pc-darts", **over) -> Path:
    """A checkpoint with every key a PC-DARTS run saves (contents beside the point here)."""
    folder.mkdir(parents=True, exist_ok=True)
    cfg = pc.get_config(method, "quick", **over)
    keys = runfolders.CHECKPOINTS["pc-darts"][2]
    state = {k: {} for k in keys}
    state.update(config=asdict(cfg), epoch=1)
    torch.save(state, folder / "checkpoint.pt")
    (folder / "genotype.json").write_text("{}\n")
    return folder


def _spos_checkpoint(folder: Path, **over) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    cfg = replace(spos.get_config("quick"), **over)
    torch.save({"config": asdict(cfg), "epoch": 1, "model": {}, "history": {}},
               folder / "supernet.pt")
    return folder


def _pnas_checkpoint(folder: Path, **over) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    cfg = pnas.get_config("quick", **over)
    (folder / "checkpoint.json").write_text(json.dumps(
        {"config": pnas.config_dict(cfg), "children": {}}))
    return folder


MAKERS = {"pc-darts": _pc_checkpoint, "spos": _spos_checkpoint, "pnas": _pnas_checkpoint}


@pytest.mark.parametrize("method", MAKERS)
def test_out_beside_resume_is_refused(method, tmp_path, capsys):
    run_dir = MAKERS[method](tmp_path / "run")
    before = snapshot(tmp_path)
    refused(capsys, SEARCHES[method] + ["--resume", str(run_dir), "--out",
                                        str(tmp_path / "other")], "--out", "--resume")
    assert snapshot(tmp_path) == before and not (tmp_path / "other").exists()


@pytest.mark.parametrize("method", MAKERS)
def test_overwrite_beside_resume_is_refused(method, tmp_path, capsys):
    run_dir = MAKERS[method](tmp_path / "run")
    before = snapshot(run_dir)
    refused(capsys, SEARCHES[method] + ["--resume", str(run_dir), "--overwrite"], "--overwrite")
    assert snapshot(run_dir) == before


@pytest.mark.parametrize("method, maker, words", [
    ("darts", _pc_checkpoint, ["holds a pc-darts run, not a darts one",
                               "search pc-darts --resume"]),
    ("pc-darts", lambda f: _pc_checkpoint(f, "darts"), ["holds a darts run"]),
    ("spos", _pc_checkpoint, ["holds a pc-darts or darts run, not a spos one"]),
    ("pnas", _spos_checkpoint, ["holds a spos run, not a pnas one", "search spos --resume"]),
    ("spos", _pnas_checkpoint, ["holds a pnas run"]),
])
def test_resume_of_another_methods_run_is_refused(method, maker, words, tmp_path, capsys):
    run_dir = maker(tmp_path / "run")
    before = snapshot(run_dir)
    refused(capsys, SEARCHES[method] + ["--resume", str(run_dir)], str(run_dir), *words)
    assert snapshot(run_dir) == before


@pytest.mark.parametrize("method", MAKERS)
def test_resume_of_a_folder_without_a_checkpoint_is_refused(method, tmp_path, capsys):
    (tmp_path / "run").mkdir()
    refused(capsys, SEARCHES[method] + ["--resume", str(tmp_path / "run")], "nothing to resume")
    refused(capsys, SEARCHES[method] + ["--resume", str(tmp_path / "missing")],
            "no run folder", "nothing to resume")
    assert not (tmp_path / "missing").exists() and list((tmp_path / "run").iterdir()) == []


def _truncate(path):
    data = path.read_bytes()
    path.write_bytes(data[:len(data) // 2])


def _empty(path):
    path.write_bytes(b"")


def _foreign(path):
    path.write_text("these are my notes, not a checkpoint\n")


def _lacks_keys(path):
    if path.suffix == ".json":
        path.write_text(json.dumps({"children": {}}))
    else:
        torch.save({"epoch": 1, "model": {}}, path)


@pytest.mark.parametrize("damage, words", [
    (_truncate, ["cannot read", "truncated"]), (_empty, ["is empty"]),
    (_foreign, ["cannot read"]), (_lacks_keys, ["lacks", "config"])])
@pytest.mark.parametrize("method, name", [("pc-darts", "checkpoint.pt"),
                                          ("spos", "supernet.pt"),
                                          ("pnas", "checkpoint.json")])
def test_a_damaged_checkpoint_is_refused_naming_it_and_left_as_is(method, name, damage, words,
                                                                   tmp_path, capsys):
    run_dir = MAKERS[method](tmp_path / "run")
    damage(run_dir / name)
    before = snapshot(run_dir)
    refused(capsys, SEARCHES[method] + ["--resume", str(run_dir)], str(run_dir / name), *words)
    assert snapshot(run_dir) == before


def test_a_damaged_spos_state_file_is_refused_naming_it(tmp_path, capsys):
    run_dir = _spos_checkpoint(tmp_path / "run")
    (run_dir / "evolution.json").write_text('{"generation": 2, "popul')
    before = snapshot(run_dir)
    refused(capsys, ["search", "spos", "--resume", str(run_dir)],
            str(run_dir / "evolution.json"))
    assert snapshot(run_dir) == before


@pytest.mark.parametrize("flags, words", [
    (["--epochs", "3"], ["--epochs 3", "epochs=1", "not 3"]),
    (["--k", "2"], ["--k 2", "k=4", "not 2"]),
    (["--seed", "5"], ["--seed 5", "seed=0", "not 5"]),
    (["--no-edge-norm"], ["--no-edge-norm", "edge_norm=True", "not False"]),
    (["--unrolled"], ["--unrolled", "unrolled=False"]),
    (["--dataset", "synthetic"], ["--dataset synthetic", "dataset='digits'", "'synthetic'"]),
    (["--preset", "full"], ["--preset full", "preset='quick'", "not 'full'"]),
    (["--preset", "gpu"], ["--preset gpu", "preset='quick'", "not 'gpu'"]),
])
def test_pc_darts_resume_refuses_a_contradicting_flag(flags, words, tmp_path, capsys):
    run_dir = _pc_checkpoint(tmp_path / "run", epochs=1, warmup_epochs=0)
    before = snapshot(run_dir)
    line = refused(capsys, ["search", "pc-darts", "--resume", str(run_dir)] + flags,
                   "contradicts the run in " + str(run_dir), *words)
    assert "drop" in line
    assert snapshot(run_dir) == before


def test_pc_darts_resume_accepts_flags_that_agree(tmp_path, no_work):
    run_dir = _pc_checkpoint(tmp_path / "run", epochs=1, warmup_epochs=0)
    with pytest.raises(Started):
        main(["search", "pc-darts", "--resume", str(run_dir), "--preset", "quick", "--epochs",
              "1", "--k", "4", "--seed", "0", "--dataset", "digits", "--device", "cpu"])
    call = no_work["pc-darts"]
    (cfg,) = call["args"]  # the saved config, from the checkpoint read once by the CLI
    assert (cfg.epochs, cfg.warmup_epochs, cfg.dataset) == (1, 0, "digits")
    assert call["resume"]["epoch"] == torch.load(run_dir / "checkpoint.pt",
                                                 weights_only=False)["epoch"]
    assert call["out"] == run_dir and str(call["device"]) == "cpu"


@pytest.mark.parametrize("flags, words", [
    (["--population", "99"], ["--population 99", "population=12", "not 99"]),
    (["--generations", "1"], ["--generations 1"]),
    (["--flops-limit", "0.9"], ["--flops-limit 0.9"]),
    (["--sampling", "uniform"], ["--sampling uniform", "'window'"]),
    (["--seed", "2"], ["--seed 2", "seed=0"]),
    (["--preset", "full"], ["--preset full", "preset='quick'"]),
    (["--preset", "gpu"], ["--preset gpu", "preset='quick'"]),
])
def test_spos_resume_refuses_a_contradicting_flag(flags, words, tmp_path, capsys):
    run_dir = _spos_checkpoint(tmp_path / "run")
    before = snapshot(run_dir)
    refused(capsys, ["search", "spos", "--resume", str(run_dir)] + flags, "contradicts",
            *words)
    assert snapshot(run_dir) == before


def test_spos_resume_takes_the_saved_settings(tmp_path, no_work):
    """No need to repeat the flags: the run continues with the settings it was made with."""
    run_dir = _spos_checkpoint(tmp_path / "run", population=4, seed=3)
    with pytest.raises(Started):
        main(["search", "spos", "--resume", str(run_dir), "--population", "4", "--device", "cpu"])
    cfg, device = no_work["spos"]["args"]  # load_data(cfg, device)
    assert (cfg.population, cfg.seed) == (4, 3) and str(device) == "cpu"


@pytest.mark.parametrize("flags, words", [
    (["--blocks", "2"], ["--blocks 2", "blocks=3"]),
    (["--beam", "5"], ["--beam 5", "beam=12"]),
    (["--predictor", "lstm"], ["--predictor lstm", "'mlp-ensemble'"]),
    (["--oracle", "table"], ["--oracle table", "'train'"]),
    (["--preset", "full"], ["--preset full", "preset='quick'"]),
    (["--preset", "gpu"], ["--preset gpu", "preset='quick'"]),
])
def test_pnas_resume_refuses_a_contradicting_flag(flags, words, tmp_path, capsys):
    run_dir = _pnas_checkpoint(tmp_path / "run")
    before = snapshot(run_dir)
    refused(capsys, ["search", "pnas", "--resume", str(run_dir)] + flags, "contradicts", *words)
    assert snapshot(run_dir) == before


def test_pnas_resume_takes_the_saved_settings(tmp_path, no_work):
    run_dir = _pnas_checkpoint(tmp_path / "run", blocks=2, beam=3, seed=4)
    with pytest.raises(Started):
        main(["search", "pnas", "--resume", str(run_dir), "--blocks", "2"])
    call = no_work["pnas"]
    (cfg,) = call["args"]
    assert (cfg.blocks, cfg.beam, cfg.seed) == (2, 3, 4)
    assert call["resume"]["children"] == {} and call["run_dir"] == run_dir  # read once


# -- issue 29: one process per run folder, finished runs, folders the OS refuses ------------
_HOLDER = """
import sys, time
from nas_tutorial.run.folders import claim
held = claim(sys.argv[1], sys.argv[2])
print("held", flush=True)
time.sleep(60)
"""


def _hold(target, kind="folder"):
    """A second process that claims ``target`` and keeps it until killed."""
    import subprocess
    import sys

    p = subprocess.Popen([sys.executable, "-c", _HOLDER, str(target), kind],
                         stdout=subprocess.PIPE, text=True)
    assert p.stdout.readline().strip() == "held"
    return p


@pytest.mark.parametrize("verb", VERBS)
def test_a_folder_another_process_is_running_in_is_refused_at_once(verb, tmp_path, capsys):
    out = tmp_path / "run"
    holder = _hold(out)
    try:
        line = refused(capsys, VERBS[verb] + ["--preset", "quick", "--out", str(out)],
                       f"in use by process {holder.pid}", "choose another --out")
        assert "since" in line
        assert os.listdir(out) == [".lock"]  # nothing written beside the holder's lock
    finally:
        holder.kill()
        holder.wait()


def test_a_resume_into_a_running_folder_is_refused_naming_the_process(tmp_path, capsys):
    run_dir = _spos_checkpoint(tmp_path / "run")
    holder = _hold(run_dir)
    try:
        refused(capsys, ["search", "spos", "--resume", str(run_dir)],
                f"in use by process {holder.pid}")
    finally:
        holder.kill()
        holder.wait()


def test_a_lock_left_by_a_killed_run_is_taken_over_and_named(tmp_path, capsys):
    out = tmp_path / "run"
    holder = _hold(out)
    holder.kill()  # SIGKILL: no chance to release its lock
    holder.wait()
    assert (out / ".lock").is_file()
    with pytest.raises(Started):
        main(["search", "pnas", "--preset", "quick", "--out", str(out)])
    err = capsys.readouterr().err
    assert f"locked by process {holder.pid}" in err and "ended without releasing it" in err
    assert os.listdir(out) == []  # released (the folder the killed run made stays)


def test_the_claim_is_released_however_the_search_ends(tmp_path, capsys):
    out = tmp_path / "run"
    for _ in range(2):  # the second start would be refused if the first kept its lock
        with pytest.raises(Started):
            main(["search", "pc-darts", "--preset", "quick", "--out", str(out)])
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    with pytest.raises(Started):
        main(["search", "spos", "--preset", "quick", "--out", str(out)])
    assert os.listdir(out) == ["notes.txt"]  # a folder it did not make stays, lock gone


def test_a_table_file_another_process_is_making_is_refused(tmp_path, capsys):
    table = tmp_path / "t.json"
    holder = _hold(table, "file")
    try:
        refused(capsys, ["table", "pnas", "--out", str(table)], "the table", "in use by",
                str(holder.pid))
        assert not table.exists()
    finally:
        holder.kill()
        holder.wait()


@pytest.mark.parametrize("verb", VERBS)
def test_a_folder_the_os_will_not_create_is_one_line_before_any_work(verb, capsys):
    refused(capsys, VERBS[verb] + ["--preset", "quick", "--out", "/proc/nas-tutorial-test"],
            "cannot create /proc/nas-tutorial-test", "choose another --out")


@pytest.mark.parametrize("method", MAKERS)
def test_resuming_a_finished_run_says_so_and_changes_nothing(method, tmp_path, capsys):
    run_dir = MAKERS[method](tmp_path / "run")
    (run_dir / "summary.json").write_text(json.dumps({"results": {}}))
    before = snapshot(tmp_path)
    code, out, err = run(capsys, *SEARCHES[method], "--resume", str(run_dir))
    assert code == 0 and not err and len(out.strip().splitlines()) == 1
    assert "has finished" in out and str(run_dir / "summary.json") in out
    assert snapshot(tmp_path) == before


def test_ctrl_c_names_the_folder_to_resume(tmp_path, capsys, monkeypatch):
    out = tmp_path / "run"

    def interrupted(config, out=None, **kw):
        torch.save({}, Path(out) / "checkpoint.pt")
        raise KeyboardInterrupt

    monkeypatch.setattr(pc, "search", interrupted)
    code, _, err = run(capsys, "search", "pc-darts", "--preset", "quick", "--out", str(out))
    assert code == 130
    assert f"continue it with `nas-tutorial search pc-darts --resume {out}`" in err
    assert not (out / ".lock").exists()


@pytest.mark.parametrize("method,field,value,words", [
    ("pc-darts", "epoch", "three", "its epoch is str 'three', not an epoch count"),
    ("pc-darts", "epoch", -1, "its epoch is int"),
    ("pc-darts", "model", [1, 2], "its model is list"),
    ("spos", "history", "x", "its history is str"),
    ("pnas", "children", "x", "its children is str"),
    ("pnas", "children", {"cell": "high"}, "its children is dict"),
])
def test_a_checkpoint_with_a_field_of_the_wrong_kind_is_one_line(method, field, value, words,
                                                                  tmp_path, capsys):
    run_dir = MAKERS[method](tmp_path / "run")
    name = runfolders.CHECKPOINTS[method][0]
    if method == "pnas":
        d = json.loads((run_dir / name).read_text())
        d[field] = value
        (run_dir / name).write_text(json.dumps(d))
    else:
        state = torch.load(run_dir / name, weights_only=False)
        state[field] = value
        torch.save(state, run_dir / name)
    before = snapshot(tmp_path)
    refused(capsys, SEARCHES[method] + ["--resume", str(run_dir)], str(run_dir / name),
            "is damaged", words, "start a new run")
    assert snapshot(tmp_path) == before


def test_a_checkpoint_of_another_method_under_the_name_is_named_so(tmp_path, capsys):
    run_dir = _pc_checkpoint(tmp_path / "run")
    (run_dir / "checkpoint.pt").rename(run_dir / "supernet.pt")
    refused(capsys, ["search", "spos", "--resume", str(run_dir)],
            "holds a pc-darts checkpoint, not a spos one")
