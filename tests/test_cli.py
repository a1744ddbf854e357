"""The nas-tutorial command: info output and its error paths (exit 2, one line)."""
import json

import pytest

import nas_tutorial as nt
from nas_tutorial.run import cli
from nas_tutorial.run.cli import main


def run(capsys, *argv):
    try:
        code = main(list(argv))
    except SystemExit as e:  # argparse's own usage errors
        code = e.code
    out, err = capsys.readouterr()
    return code, out, err


def test_info_json(capsys):
    code, out, _ = run(capsys, "info", "DARTS_V2", "--auxiliary", "--json")
    assert code == 0
    info = json.loads(out)
    assert set(info) == {"params", "params_auxiliary", "flops"}
    assert info["params"] == 3_349_342 and info["params_auxiliary"] > info["params"]
    assert 500e6 < info["flops"] < 560e6


def test_info_reads_a_genotype_file(capsys, tmp_path):
    path = tmp_path / "cell.json"
    nt.GENOTYPES["PC_DARTS"].to_json(path)
    code, out, _ = run(capsys, "info", str(path), "--channels", "16", "--layers", "8", "--json")
    assert code == 0 and json.loads(out)["params"] > 0


def test_info_human_readable(capsys):
    code, out, _ = run(capsys, "info", "pnasnet_5", "--channels", "8", "--layers", "5")
    assert code == 0 and "params:" in out and "FLOPs:" in out


@pytest.mark.parametrize("argv, words", [
    (["info", "NOPE"], "unknown genotype 'NOPE'"),
    (["info", "DARTS_V2", "--channels", "7"], "even"),
    (["info", "DARTS_V2", "--channels", "-4"], "positive"),
    (["train", "DARTS_V2", "--preset", "huge"], "invalid choice"),
    (["search", "pc-darts", "--dataset", "imagenet"], "invalid choice"),
])
def test_bad_input_exits_2_with_one_line(capsys, argv, words):
    code, out, err = run(capsys, *argv)
    assert code == 2
    assert len(err.strip().splitlines()) == 1
    assert words in err and "Traceback" not in err


@pytest.mark.parametrize("content, words", [
    ("{not json", "not valid JSON"),
    ('{"normal": [["sep_conv_3x3", 0], ["conv_9x9", 1]], "normal_concat": [2]}', "unknown op"),
    ('{"normal": [["sep_conv_3x3", 0]], "normal_concat": [2]}', "even"),
])
def test_bad_genotype_file_exits_2(capsys, tmp_path, content, words):
    path = tmp_path / "bad.json"
    path.write_text(content)
    code, _, err = run(capsys, "info", str(path))
    assert code == 2 and words in err and len(err.strip().splitlines()) == 1


def test_missing_file_exits_2(capsys, tmp_path):
    code, _, err = run(capsys, "info", str(tmp_path / "missing.json"))
    assert code == 2 and "cannot read" in err


# -- issue 16: one error path -------------------------------------------------------------------
def one_line(err: str) -> str:
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("nas-tutorial: error: "), err
    return lines[0]


@pytest.mark.parametrize("argv", [["--debug", "info", "NOPE"], ["info", "NOPE", "--debug"]])
def test_debug_shows_the_traceback_of_an_expected_error(capsys, argv):
    code, _, err = run(capsys, "info", "NOPE")
    assert code == 2 and "Traceback" not in err and "unknown genotype 'NOPE'" in one_line(err)
    code, _, err = run(capsys, *argv)
    assert code == 2 and "Traceback" in err and "GenotypeError" in err
    assert err.strip().splitlines()[-1] == "nas-tutorial: error: unknown genotype 'NOPE': use " \
        "one of DARTS_V1, DARTS_V2, PC_DARTS, PNASNET_5 or a path to a genotype JSON file"


def test_an_unexpected_exception_keeps_its_traceback(monkeypatch):
    def bug(name):
        raise KeyError("a bug")

    monkeypatch.setattr(cli, "resolve", bug)  # where the CLI looks it up
    with pytest.raises(KeyError, match="a bug"):
        main(["info", "PC_DARTS"])


def test_a_diverged_search_is_one_line(capsys, monkeypatch, tmp_path):
    from nas_tutorial import pc_darts

    message = ("search diverged in epoch 3: NaN/Inf in the loss; the last good checkpoint "
               f"(epoch 2) is kept in {tmp_path}; try a lower lr or arch_lr")

    def diverge(*args, **kw):
        raise pc_darts.SearchDiverged(message)

    monkeypatch.setattr(pc_darts, "search", diverge)
    code, _, err = run(capsys, "search", "pc-darts", "--preset", "quick", "--out",
                       str(tmp_path / "run"))
    assert code == 2 and one_line(err) == f"nas-tutorial: error: {message}"


@pytest.mark.parametrize("error, words", [
    (RuntimeError("[enforce fail at alloc_cpu.cpp:127] err == 0. DefaultCPUAllocator: can't "
                  "allocate memory: you tried to allocate 40000000000000 bytes. Error code 12"),
     "out of memory: asked for 40.0 TB at once"),
    (MemoryError(), "out of memory"),
])
def test_out_of_memory_is_one_line(capsys, monkeypatch, tmp_path, error, words):
    def oom(*args, **kw):
        raise error

    monkeypatch.setattr(cli, "train_genotype", oom)
    code, _, err = run(capsys, "train", "PC_DARTS", "--out", str(tmp_path / "run"))
    assert code == 2 and words in one_line(err)


def test_an_interrupted_train_writes_nothing_and_suggests_no_resume(capsys, monkeypatch,
                                                                    tmp_path):
    def stop(*args, **kw):
        raise KeyboardInterrupt

    monkeypatch.setattr(cli, "train_genotype", stop)
    code, _, err = run(capsys, "train", "PC_DARTS", "--out", str(tmp_path / "run"))
    assert code == 130 and err.strip() == "nas-tutorial: interrupted"
    assert not (tmp_path / "run").exists()


# -- genotype files ----------------------------------------------------------------------------
PAIRS = '[["sep_conv_3x3", 1], ["sep_conv_3x3", 0], ["sep_conv_3x3", 1], ["sep_conv_3x3", 2]]'


@pytest.mark.parametrize("content, words", [
    ("[" * 5000 + "]" * 5000, "nested too deeply"),
    # deeper than a genotype can be, shallow enough for every Python's parser: the refusal
    # is the project's own, the same on every version
    ("[" * 40 + "]" * 40, "nested too deeply (over 16 levels"),
    ('{"normal": ' + "[" * 5000 + "]" * 5000 + ', "normal_concat": [2]}', "nested too deeply"),
    ('{"normal": [["sep_conv_3x3", Infinity], ["sep_conv_3x3", 0]], "normal_concat": [2]}',
     "Infinity is not a number JSON allows"),
    ('{"normal": [["sep_conv_3x3", NaN], ["sep_conv_3x3", 0]], "normal_concat": [2]}',
     "NaN is not a number JSON allows"),
    ('{"normal": [["sep_conv_3x3", 1e999], ["sep_conv_3x3", 0]], "normal_concat": [2]}',
     "index must be a whole number, got Infinity"),
    ('{"normal": [["sep_conv_3x3", 1.7], ["sep_conv_3x3", 0]], "normal_concat": [2]}',
     "normal node 0 input: an index must be a whole number, got 1.7"),
    ('{"normal": [["sep_conv_3x3", true], ["sep_conv_3x3", 0]], "normal_concat": [2]}',
     "normal node 0 input: an index must be a whole number, got true"),
    ('{"normal": [["sep_conv_3x3", 1], ["sep_conv_3x3", 0]], "normal_concat": [2.0]}',
     "normal_concat: an index must be a whole number, got 2.0"),
    ('{"normal": ' + PAIRS + ', "normal_concat": [2, 3, 3]}', "lists node 3 twice"),
    ('{"normal": [["sep_conv_3x3", ' + "9" * 5000 + '], ["sep_conv_3x3", 0]], '
     '"normal_concat": [2]}', "not valid JSON"),
])
def test_hostile_genotype_files_are_one_line(capsys, tmp_path, content, words):
    path = tmp_path / "bad.json"
    path.write_text(content)
    for verb in (["info"], ["train", "--out", str(tmp_path / "run")]):
        code, _, err = run(capsys, *verb, str(path))
        assert code == 2 and words in one_line(err)
    assert not (tmp_path / "run").exists()


def test_a_genotype_file_over_the_size_limit_is_refused_unread(capsys, tmp_path, monkeypatch):
    path = tmp_path / "huge.json"
    nt.GENOTYPES["PC_DARTS"].to_json(path)
    with path.open("a") as f:
        f.write(" " * nt.genotypes.MAX_FILE_BYTES)  # still a valid genotype, 1 MB too long
    monkeypatch.setattr(type(path), "read_text", lambda *a, **k: pytest.fail("file was read"))
    code, _, err = run(capsys, "info", str(path))
    assert code == 2 and "is 1.0 MB" in one_line(err) and "limit 1 MB" in err


def test_whole_numbers_still_read_as_indices():
    import numpy as np

    g = nt.Genotype.from_cell([("sep_conv_3x3", np.int64(1)), ("max_pool_3x3", 0)], [2])
    assert g.normal == (("sep_conv_3x3", 1), ("max_pool_3x3", 0))
    assert type(g.normal[0][1]) is int


# -- absurd sizes ------------------------------------------------------------------------------
@pytest.mark.parametrize("flags, words", [
    (["--channels", "100000"], "25,850,790,300,010 parameters"),
    (["--image-size", "100000"], "a feature map of 1,440,000,000,000 values"),
    (["--num-classes", "1000000000"], "577,003,628,908 parameters"),
])
def test_absurd_sizes_are_refused_at_once_with_the_memory_they_need(capsys, monkeypatch, flags,
                                                                    words):
    from nas_tutorial import network
    from nas_tutorial.run import cli

    monkeypatch.setattr(cli, "_machine_memory", lambda: 64 * 10**9)
    built = []
    real_init = network.NetworkCIFAR.__init__

    def watch(self, *args, **kw):  # only the meta-device estimate may build the network
        real_init(self, *args, **kw)
        built.append(next(self.parameters()).device.type)

    monkeypatch.setattr(network.NetworkCIFAR, "__init__", watch)
    code, out, err = run(capsys, "info", "PC_DARTS", *flags)
    line = one_line(err)
    assert code == 2 and out == "" and built == ["meta"]
    assert "needs at least" in line and "TB of memory" in line and words in line
    assert "this machine has 64.0 GB" in line


def test_the_memory_bound_is_params_plus_the_largest_feature_map(capsys, monkeypatch):
    from nas_tutorial.run import cli

    # PC_DARTS at C=36, 20 cells, 32 px: 3,634,678 params + 147,456 values = 15,128,536 bytes
    monkeypatch.setattr(cli, "_machine_memory", lambda: 15_128_536)
    assert run(capsys, "info", "PC_DARTS", "--json")[0] == 0
    monkeypatch.setattr(cli, "_machine_memory", lambda: 15_128_535)
    code, _, err = run(capsys, "info", "PC_DARTS", "--json")
    assert code == 2 and "needs at least 15.1 MB" in one_line(err)
    assert "this machine has 15.1 MB" in err


# -- --device ----------------------------------------------------------------------------------
DEVICE_VERBS = [["train", "PC_DARTS"], ["search", "pc-darts"], ["search", "darts"],
                ["search", "spos"], ["search", "pnas"], ["table", "pnas"]]


@pytest.mark.parametrize("verb", DEVICE_VERBS)
@pytest.mark.parametrize("device, words", [
    ("cuda", "'cuda': no CUDA device here"), ("cuda:1", "'cuda:1': no CUDA device here"),
    ("tpu", "expected auto, cpu, cuda or cuda:N, got 'tpu'")])
def test_a_device_this_machine_lacks_is_one_line(capsys, monkeypatch, verb, device, words):
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    code, _, err = run(capsys, *verb, "--device", device)
    assert code == 2 and words in one_line(err)


def test_a_cuda_index_past_the_last_gpu_is_one_line(capsys, monkeypatch):
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    code, _, err = run(capsys, "search", "spos", "--device", "cuda:2")
    assert code == 2 and "has 2 CUDA device(s), cuda:0..cuda:1" in one_line(err)


@pytest.mark.parametrize("verb, target", [
    (["train", "PC_DARTS"], ("run.cli", "train_genotype")),
    (["search", "pc-darts"], ("methods.pc_darts", "search")),
    (["search", "darts"], ("methods.pc_darts", "search")),
    (["search", "spos"], ("run.searches", "search_spos")),
    (["search", "pnas"], ("methods.pnas", "search")),
    (["table", "spos"], ("run.cli", "cli_table")),
])
@pytest.mark.parametrize("device", ["cpu", "auto"])
def test_device_reaches_the_functions_that_compute(monkeypatch, tmp_path, verb, target, device):
    import importlib

    module = importlib.import_module(f"nas_tutorial.{target[0]}")  # where the CLI calls it
    seen = []

    def record(*args, **kw):
        seen.append(kw.get("device", args[-1] if args else None))
        raise KeyboardInterrupt  # stop here: nothing runs, nothing is written

    monkeypatch.setattr(module, target[1], record)
    out = [] if verb[0] == "table" else ["--out", str(tmp_path / "run")]
    assert main([*verb, "--preset", "quick", "--device", device, *out]) == 130
    from nas_tutorial.data import resolve_device

    # passed on as given or already resolved: the same device either way
    assert [resolve_device(d) for d in seen] == [resolve_device(device)]
    assert not (tmp_path / "run").exists()


# -- issue 16, rest: values refused before any work, divergence of train ------------------------
@pytest.mark.parametrize("argv, words", [
    (["search", "spos", "--flops-limit", "nan"], "--flops-limit: expected a positive number, got 'nan'"),
    (["search", "spos", "--flops-limit", "inf"], "--flops-limit: expected a positive number, got 'inf'"),
    (["search", "spos", "--flops-limit", "-1"], "--flops-limit: expected a positive number"),
    (["search", "spos", "--params-limit", "NaN"], "--params-limit: expected a positive number"),
    (["search", "spos", "--params-limit=-inf"], "--params-limit: expected a positive number"),
    (["search", "pnas", "--seed", str(2 ** 63)], "--seed: expected a whole number from 0 to 4,294,967,295"),
    (["train", "DARTS_V2", "--seed", str(2 ** 64)], "--seed: expected a whole number from 0 to"),
    (["search", "spos", "--population", "10001"], "--population: expected a number from 1 to 10,000, got '10001'"),
    (["search", "spos", "--generations", "100000"], "--generations: expected a number from 1 to 10,000"),
    (["search", "pnas", "--blocks", "6"], "--blocks: expected a number from 1 to 5, got '6'"),
    (["search", "pnas", "--beam", "1000000"], "--beam: expected a number from 1 to 10,000"),
    (["search", "pc-darts", "--epochs", "1000000"], "--epochs: expected a number from 1 to 10,000"),
    (["train", "DARTS_V2", "--epochs", "99999"], "--epochs: expected a number from 1 to 10,000"),
    (["info", "DARTS_V2", "--layers", "1000000000"], "--layers: expected a number from 1 to 1,000"),
])
def test_absurd_values_are_refused_at_once_with_the_range(capsys, tmp_path, monkeypatch, argv,
                                                          words):
    """Before: --flops-limit nan trained 5 minutes, then 'min() arg is an empty sequence'; a
    seed over 2**63 failed after 10 PNAS children; no bound on population or layers."""
    monkeypatch.chdir(tmp_path)
    code, out, err = run(capsys, *argv)
    assert code == 2 and words in one_line(err) and out == ""
    assert list(tmp_path.iterdir()) == []  # nothing created


def test_spos_config_refuses_a_nan_budget():
    from nas_tutorial import spos

    with pytest.raises(ValueError, match="flops_limit must be a positive finite number"):
        spos.get_config("quick", flops_limit=float("nan"))
    with pytest.raises(ValueError, match="params_limit must be a positive finite number"):
        spos.get_config("quick", params_limit=float("inf"))


def test_a_diverged_train_is_one_line_and_creates_no_folder(capsys, monkeypatch, tmp_path):
    from nas_tutorial import training

    def diverge(*args, **kw):
        raise training.diverged("training", 2, "loss", hint="a lower lr than 0.05")

    monkeypatch.setattr(cli, "train_genotype", diverge)
    out = tmp_path / "run"
    code, _, err = run(capsys, "train", "DARTS_V2", "--preset", "quick", "--out", str(out))
    assert code == 2 and one_line(err) == (
        "nas-tutorial: error: training diverged in epoch 2: NaN/Inf in the loss; no "
        "checkpoint was kept; try a lower lr than 0.05")
    assert not out.exists()


def test_the_preset_follows_the_chosen_device(capsys, monkeypatch, tmp_path):
    """On a GPU machine ``--device cpu`` (or ``device="cpu"``) means the quick preset unless
    a preset is named; "auto" there means full."""
    import torch

    from nas_tutorial import pc_darts

    monkeypatch.delenv("NAS_TUTORIAL_PRESET", raising=False)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)  # a GPU machine
    assert nt.get_preset(device="cpu").name == "quick"
    assert nt.get_preset().name == "full" and nt.get_preset(device="cuda").name == "full"
    assert nt.get_preset("full", device="cpu").name == "full"  # a named preset wins
    assert pc_darts._resolve_config(None, None, "cpu") == pc_darts.get_config("pc-darts", "quick")
    seen = {}

    def fake(**kw):
        seen.update(kw)
        return {"result": "x", "run_dir": tmp_path}

    from nas_tutorial.run import searches

    monkeypatch.setattr(searches, "search_pc_darts", fake)
    assert main(["search", "pc-darts", "--device", "cpu", "--out", str(tmp_path / "r")]) == 0
    assert seen["preset"] == "quick"
    assert main(["search", "pc-darts", "--device", "cpu", "--preset", "full",
                 "--out", str(tmp_path / "r")]) == 0
    assert seen["preset"] == "full"


def test_student_copies_come_from_the_command_line(tmp_path, capsys):
    """`nas-tutorial student` (make student) writes a learner's copy of every notebook."""
    from pathlib import Path

    src = Path(__file__).resolve().parent.parent / "notebooks"
    assert main(["student", str(src), str(tmp_path)]) == 0
    written = sorted(p.name for p in tmp_path.glob("*.ipynb"))
    assert written == sorted(p.name for p in src.glob("*.ipynb"))
    assert capsys.readouterr().out.count("student copy:") == len(written)


def test_a_search_step_is_timed_by_the_library():
    """Notebook 03 and `make bench` time the step through nas_tutorial.run.measure."""
    from nas_tutorial.run import measure

    row = measure.search_step(4, C=4, layers=3, batch=2, image_size=8, steps=1, device="cpu")
    assert row["k"] == 4 and row["step_s"] > 0 and row["cpu_s"] > 0 and row["params"] > 0


def test_a_dataset_flag_keeps_its_native_size(monkeypatch, tmp_path):
    """`--dataset synthetic` on the quick preset searches at the data's own size: the
    flag's image_size=None is set on purpose, not dropped as a flag left out."""
    from nas_tutorial.methods import pc_darts

    seen = {}

    def capture(config, **kw):
        seen["config"] = config
        raise KeyboardInterrupt

    monkeypatch.setattr(pc_darts, "search", capture)
    assert main(["search", "pc-darts", "--preset", "quick", "--dataset", "synthetic",
                 "--out", str(tmp_path / "r")]) == 130
    assert seen["config"].dataset == "synthetic" and seen["config"].image_size is None
    assert main(["search", "pc-darts", "--preset", "quick", "--dataset", "digits",
                 "--out", str(tmp_path / "r")]) == 130
    assert seen["config"].image_size == 16


# -- issue 29: genotype files the CLI must answer at once -------------------------------------
def test_a_cell_of_thousands_of_nodes_is_refused_at_once(capsys, tmp_path):
    import time

    pairs = [["sep_conv_3x3", 0], ["skip_connect", 1]] * 3000
    path = tmp_path / "huge.json"
    path.write_text(json.dumps({"normal": pairs, "normal_concat": [2, 3]}))
    t0 = time.perf_counter()
    code, _, err = run(capsys, "info", str(path))
    assert code == 2 and time.perf_counter() - t0 < 10  # it hung for over 60 s
    assert err.count("\n") == 1 and "normal cell has 3,000 nodes; at most 32" in err


def test_info_says_when_the_normal_cell_is_reused_for_reduction(capsys, tmp_path):
    path = tmp_path / "pnas_cell.json"
    g = nt.GENOTYPES["PNASNET_5"]
    path.write_text(json.dumps({"normal": [list(p) for p in g.normal],
                                "normal_concat": list(g.normal_concat)}))
    code, out, _ = run(capsys, "info", str(path), "--channels", "8", "--layers", "5")
    assert code == 0 and "one cell for both roles" in out
    code, out, _ = run(capsys, "info", "DARTS_V2", "--channels", "8", "--layers", "5")
    assert code == 0 and "one cell for both roles" not in out
