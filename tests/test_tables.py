"""Ground-truth tables: making, resuming, summarizing, and the shipped tables against the code."""
import json

import numpy as np
import pytest
import torch

from nas_tutorial.run import tables
from nas_tutorial.run.cli import main as cli_main
from nas_tutorial.run.tables import Spec, Table, TableError


def _fake_spec(calls):
    rows = [{"key": f"a{i}", "group": "g", "arch": [i]} for i in range(5)]

    def train(arch, seed):
        calls.append((arch[0], seed))
        return 0.5 + 0.1 * arch[0] + 0.01 * seed

    return lambda preset, device: Spec("pnas", rows, {"epochs": 1}, lambda a: (a[0], 2 * a[0]),
                                       train)


def test_make_writes_rows_seeds_and_header(tmp_path, monkeypatch):
    calls = []
    monkeypatch.setitem(tables._SPECS, "pnas", _fake_spec(calls))
    out = tmp_path / "t.json"
    table = tables.make("pnas", seeds=3, out=out, progress=False)
    assert len(calls) == 15 and len(table) == 5
    d = json.loads(out.read_text())
    assert d["protocol"] == {"epochs": 1} and d["seeds"] == [0, 1, 2]
    assert {"device", "torch", "created", "wall_s", "stats"} <= set(d)
    assert d["rows"][2]["accuracy"] == pytest.approx([0.7, 0.71, 0.72])
    assert d["rows"][2]["params"] == 2 and d["rows"][2]["flops"] == 4
    loaded = tables.load("pnas", path=out)
    assert loaded.accuracy("a2", seed=1) == pytest.approx(0.71)
    assert loaded.accuracy("a2", seed=4) == pytest.approx(0.71)  # seed 4 reads seed 4 mod 3
    assert loaded.accuracy("a2") == pytest.approx(0.71)          # mean over seeds


def test_interrupted_table_resumes_without_retraining(tmp_path, monkeypatch):
    calls = []
    spec = _fake_spec(calls)

    def failing(preset, device):
        s = spec(preset, device)
        inner = s.train

        def train(arch, seed):
            if arch[0] == 3:
                raise KeyboardInterrupt
            return inner(arch, seed)

        s.train = train
        return s

    out = tmp_path / "t.json"
    monkeypatch.setitem(tables._SPECS, "pnas", failing)
    with pytest.raises(KeyboardInterrupt):
        tables.make("pnas", seeds=2, out=out, progress=False)
    assert [r["key"] for r in json.loads(out.read_text())["rows"]] == ["a0", "a1", "a2"]
    with pytest.raises(TableError, match="--resume"):
        tables.make("pnas", seeds=2, out=out, progress=False)  # never overwrite work
    calls.clear()
    monkeypatch.setitem(tables._SPECS, "pnas", spec)
    table = tables.make("pnas", seeds=2, out=out, resume=True, progress=False)
    assert sorted({a for a, _ in calls}) == [3, 4] and len(table.complete()) == 5
    with pytest.raises(TableError, match="must be at least 2"):
        tables.make("pnas", seeds=1, out=out, resume=True, progress=False)


def test_more_seeds_extend_a_table_that_reads_as_before_until_every_row_has_them(
        tmp_path, monkeypatch):
    from nas_tutorial.devices import machine

    calls = []
    monkeypatch.setitem(tables._SPECS, "pnas", _fake_spec(calls))
    out = tmp_path / "t.json"
    before = tables.make("pnas", seeds=2, out=out, progress=False)
    calls.clear()
    part = tables.make("pnas", seeds=4, out=out, resume=True, limit=2, progress=False)
    assert calls == [(0, 2), (0, 3), (1, 2), (1, 3)]  # only the missing seeds, row by row
    assert part.seeds == [0, 1] and part.header["seeds_planned"] == 4
    assert len(part.complete(4)) == 2
    assert part.row("a0")["accuracy"] == before.row("a0")["accuracy"]  # 2 of its 4 seeds
    assert tables.summarize(part.rows)["seeds"] == 2  # the seeds every row has
    for key in ("a0", "a1", "a4"):  # the table reads as the 2-seed one did
        assert part.accuracy(key) == before.accuracy(key)
        assert part.accuracy(key, seed=2) == before.accuracy(key, seed=2)
    calls.clear()
    full = tables.make("pnas", out=out, resume=True, progress=False)  # --seeds from the file
    assert sorted(calls) == [(a, s) for a in (2, 3, 4) for s in (2, 3)]
    assert full.seeds == [0, 1, 2, 3] and "seeds_planned" not in full.header
    assert full.accuracy("a2", seed=3) == pytest.approx(0.73)
    assert full.accuracy("a2") == pytest.approx(0.715)
    s = full.stats()
    assert s["seeds"] == 4 and s["split_half"] == pytest.approx(1.0)
    assert s["reliability"] == pytest.approx(1.0)
    here = machine("cpu", threads=1)["fingerprint"]  # tables train on one thread
    assert full.machine("a2", 0) == full.machine("a2", 3) == here


def test_an_old_table_without_machines_keeps_them_unknown_when_extended(tmp_path, monkeypatch):
    calls = []
    monkeypatch.setitem(tables._SPECS, "pnas", _fake_spec(calls))
    out = tmp_path / "t.json"
    tables.make("pnas", seeds=1, out=out, progress=False)
    d = json.loads(out.read_text())
    d.pop("machines")  # as the tables made before machines were recorded
    out.write_text(json.dumps(d))
    table = tables.make("pnas", seeds=2, out=out, resume=True, progress=False)
    assert table.machine("a1", 0) is None  # made somewhere unknown: never compared exactly
    assert table.machine("a1", 1) == table.header["machines"][1]["fingerprint"] is not None
    assert table.row("a1")["machine"] == [0, 1]


def test_workers_put_rows_and_seeds_where_one_process_does(tmp_path, monkeypatch):
    import table_fakes

    monkeypatch.setitem(tables._SPECS, "pnas", table_fakes.spec)
    one = tables.make("pnas", seeds=2, out=tmp_path / "one.json", progress=False)
    two = tables.make("pnas", seeds=2, out=tmp_path / "two.json", progress=False, workers=2)
    assert [r["key"] for r in two.rows] == ["a0", "a1", "a2", "a3", "a4"]  # a0 landed last
    strip = lambda t: [{k: v for k, v in r.items() if k != "seconds"} for r in t.rows]
    assert strip(two) == strip(one)
    tables.make("pnas", seeds=2, out=tmp_path / "ext.json", progress=False, limit=3)
    ext = tables.make("pnas", seeds=3, out=tmp_path / "ext.json", resume=True, progress=False,
                      workers=2)
    assert [r["accuracy"] for r in ext.rows] == [
        [round(0.5 + 0.1 * i + 0.01 * s, 6) for s in range(3)] for i in range(5)]


def test_summary_separates_noise_from_signal():
    rows = [{"accuracy": [a, a + d]} for a, d in [(0.5, 0.01), (0.6, -0.01), (0.7, 0.01),
                                                   (0.8, -0.01)]]
    s = tables.summarize(rows)
    assert s["rows"] == 4 and s["seeds"] == 2
    assert s["seed_sd"] == pytest.approx(0.01 / np.sqrt(2))  # SD of (a, a + 0.01)
    assert s["arch_sd"] == pytest.approx(np.std([0.505, 0.595, 0.705, 0.795], ddof=1))
    assert s["seed_spearman"] == pytest.approx(1.0)
    shuffled = tables.summarize([{"accuracy": [a, b]} for a, b in
                                 [(0.5, 0.8), (0.6, 0.7), (0.7, 0.6), (0.8, 0.5)]])
    assert shuffled["seed_spearman"] == pytest.approx(-1.0)


def test_parallel_seeds_equal_one_by_one_on_digits():
    """--parallel trains a row's seeds in threads; the accuracies are those of training
    them one after the other (here on digits, the unit tests' data)."""
    spec = tables.spec("pnas", "quick")
    cell = spec.rows[0]["arch"]
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        one_by_one = [spec.train(cell, s) for s in (0, 1)]
        together = spec.train_seeds(cell, [0, 1])
    finally:
        torch.set_num_threads(old)
    assert together == one_by_one and one_by_one[0] != one_by_one[1]


def test_limit_trains_new_rows_and_keeps_the_old(tmp_path, monkeypatch):
    calls = []
    monkeypatch.setitem(tables._SPECS, "pnas", _fake_spec(calls))
    out = tmp_path / "t.json"
    assert len(tables.make("pnas", seeds=1, out=out, limit=2, progress=False)) == 2
    table = tables.make("pnas", seeds=1, out=out, resume=True, limit=2, progress=False)
    assert [r["key"] for r in table.rows] == ["a0", "a1", "a2", "a3"]
    assert [a for a, _ in calls] == [0, 1, 2, 3]  # nothing trained twice
    assert json.loads(out.read_text())["stats"]["seed_sd"] is None  # one seed: no NaN in JSON


def test_cli_table_errors_are_one_line(tmp_path, capsys):
    out = tmp_path / "exists.json"
    out.write_text("{}")
    assert cli_main(["table", "pnas", "--preset", "quick", "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "--resume" in err
    assert cli_main(["table", "pnas", "--preset", "quick", "--out", str(tmp_path / "none.json"),
                     "--resume"]) == 2
    assert "nothing to resume" in capsys.readouterr().err
    with pytest.raises(SystemExit) as e:
        cli_main(["table", "darts"])
    assert e.value.code == 2
    (tmp_path / "bad.json").write_text("{not json")
    with pytest.raises(TableError, match="not a table"):
        tables.load("pnas", path=tmp_path / "bad.json")


# -- the shipped tables ---------------------------------------------------------------------
@pytest.mark.parametrize("method, space", [(m, "blocks") for m in tables.METHODS]
                         + [("spos", "channels")])
@pytest.mark.fashion
def test_shipped_table_matches_the_code(method, space):
    """The protocol in the header is the one the code trains with now, every row has an
    accuracy for every seed, and the table holds what the issue asks for."""
    table = tables.load(method, tables.table_name("quick", space))
    spec = tables.spec(method, "quick", space=space)
    assert table.header["protocol"] == json.loads(json.dumps(spec.protocol))
    assert [r["key"] for r in table.rows] == [r["key"] for r in spec.rows]
    assert len(table.complete()) == len(table) and len(table.seeds) >= 2
    minimum = {"pnas": 375, "spos": 32, "pc-darts": 24 + 4}[method]
    if space == "channels":  # issue 27: 48 paths, four seeds each
        minimum = 48
        assert len(table.seeds) == 4 and table.header["space"] == "channels"
    assert len(table) >= minimum
    s = table.stats()
    assert s["arch_sd"] > 0 and s["seed_sd"] > 0


@pytest.mark.fashion
def test_a_live_row_lands_on_the_recorded_accuracy():
    """Training one row again with the table's protocol and seeds gives the recorded
    accuracies: bit for bit where the machine that trained that seed has this machine's
    fingerprint (CPU model and flags, ISA caps, threads, torch build), within three seed SDs
    elsewhere; one seed at a time and with the seeds in parallel threads."""
    from nas_tutorial.devices import same_machine

    table = tables.load("pnas")
    row = table.rows[0]  # a one-block cell: seconds to train
    spec = tables.spec("pnas", "quick")
    noise = 3 * table.stats()["seed_sd"]
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        tol = [1e-6 if same_machine(table.machine(row["key"], s)) else noise for s in (0, 1)]
        assert spec.train(row["arch"], 1) == pytest.approx(row["accuracy"][1], abs=tol[1])
        both = spec.train_seeds(row["arch"], [0, 1])
    finally:
        torch.set_num_threads(old)
    for s in (0, 1):
        assert both[s] == pytest.approx(row["accuracy"][s], abs=tol[s])


# -- placing a new architecture in a table ---------------------------------------------------
def _placing_table(accs, protocol=None):
    rows = [{"key": f"r{i}", "group": "random", "arch": [i], "accuracy": list(a)}
            for i, a in enumerate(accs)]
    rows.append({"key": "pub", "group": "published", "arch": [9], "accuracy": [0.99, 0.99]})
    return Table("pc-darts", {"seeds": [0, 1], "protocol": protocol or {"epochs": 1}}, rows)


def test_percentile_counts_single_trainings_of_the_random_rows():
    table = _placing_table([(0.1, 0.2), (0.3, 0.4)])
    assert list(table.trainings()) == [0.1, 0.2, 0.3, 0.4]  # published rows left out
    assert table.percentile(0.25) == 50.0
    assert table.percentile(0.05) == 0.0 and table.percentile(0.5) == 100.0
    assert table.percentile(0.3) == pytest.approx(62.5)  # a tie counts half
    with pytest.raises(TableError, match="no complete 'other' rows"):
        table.percentile(0.5, group="other")


def test_retrain_trains_with_the_spec_and_refuses_a_stale_table(monkeypatch):
    calls = []

    def fake(preset, device):
        def train(arch, seed, progress=False):
            calls.append((arch, seed))
            return 0.35
        return Spec("pc-darts", [], {"epochs": 1}, None, train)

    monkeypatch.setitem(tables._SPECS, "pc-darts", fake)
    table = _placing_table([(0.1, 0.2), (0.3, 0.4)])
    placed = tables.retrain("pc-darts", {"normal": []}, seed=3, table=table)
    assert calls == [({"normal": []}, 3)]
    assert placed["accuracy"] == 0.35 and placed["percentile"] == 75.0
    assert placed["random_median"] == pytest.approx(0.25)
    stale = _placing_table([(0.1, 0.2)], protocol={"epochs": 2})
    with pytest.raises(TableError, match="another protocol"):
        tables.retrain("pc-darts", {"normal": []}, table=stale)
    assert len(calls) == 1  # refused before training


@pytest.mark.parametrize("kind", ["folder", "under-a-file", "read-only"])
def test_table_out_is_checked_before_any_training(tmp_path, monkeypatch, capsys, kind):
    """A table file that cannot be written is refused in one line, before training."""
    import os

    calls = []
    monkeypatch.setitem(tables._SPECS, "pnas", _fake_spec(calls))
    if kind == "folder":
        out = tmp_path / "dir"
        out.mkdir()
    elif kind == "under-a-file":
        (tmp_path / "f").write_text("x")
        out = tmp_path / "f" / "t.json"
    else:
        (tmp_path / "ro").mkdir()
        out = tmp_path / "ro" / "t.json"
        real = os.access
        monkeypatch.setattr(os, "access", lambda p, m: False if str(p).endswith("ro")
                            else real(p, m))
    assert cli_main(["table", "pnas", "--out", str(out), "--seeds", "1"]) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and ("folder" in err or "cannot write" in err)
    assert calls == []


def test_a_cell_is_placed_among_the_random_cells_by_their_truth():
    """percentile_of_means judges by each row's mean over seeds (the truth), where
    percentile places one training among single trainings."""
    rows = [{"key": f"r{i}", "group": "random", "arch": {}, "accuracy": [a - 0.1, a + 0.1]}
            for i, a in enumerate((0.2, 0.4, 0.6, 0.8))]
    t = Table("pc-darts", {"seeds": [0, 1], "protocol": {}}, rows)
    assert t.percentile_of_means(0.5) == 50.0 and t.percentile_of_means(0.6) == 62.5
    assert t.percentile(0.5) == 50.0 and t.percentile(0.75) == 87.5  # among single trainings
    with pytest.raises(TableError, match="no complete 'published' rows"):
        t.percentile_of_means(0.5, "published")


def test_a_table_knows_the_kind_of_device_that_trained_it():
    cpu = {"cpu": "AMD EPYC", "fingerprint": "a"}
    assert Table("pnas", {"seeds": [0], "machines": [cpu]}).device_type == "cpu"
    assert Table("pnas", {"seeds": [0], "machines": [cpu, {"gpu": "H200"}]}).device_type == "cuda"
    assert Table("pnas", {"seeds": [0], "device": "CPU x86_64, 1 thread"}).device_type == "cpu"
    assert Table("pnas", {"seeds": [0], "device": "NVIDIA H200"}).device_type == "cuda"


# -- issue 27: SPOS's channel space has its own table ---------------------------------------
def test_the_channel_table_spreads_its_paths_evenly_over_the_flops_range():
    from nas_tutorial.methods import spos

    s = tables.spec("spos", "quick", space="channels")
    sc = spos.get_config("quick", space="channels").supernet
    assert s.protocol["supernet"]["channel_scales"] == spos.CHANNEL_SCALES
    assert s.protocol != tables.spec("spos", "quick").protocol  # a table answers for one space
    flops = np.array([spos.count_flops(r["arch"], sc) for r in s.rows]) / 1e6
    assert len(s.rows) == tables.SPOS_CHANNEL_PATHS == len({r["key"] for r in s.rows}) >= 48
    gaps = np.diff(flops)
    assert (gaps > 0).all() and gaps.max() < 2 * gaps.mean()  # even, not crowded mid-range
    lo, hi = spos.space_range(sc)["flops"]
    assert flops[-1] - flops[0] > 0.9 * (hi - lo)
    assert [r["key"] for r in s.rows] == [spos.path_key(r["arch"]) for r in s.rows]
    assert tables.table_name("quick", "channels") == "quick-channels"
    assert tables.default_path("spos", "quick-channels").name == "spos-quick-channels.json"


def test_only_spos_has_a_channel_space(tmp_path, capsys):
    with pytest.raises(TableError, match="space 'channels' is SPOS's only"):
        tables.spec("pnas", "quick", space="channels")
    assert cli_main(["table", "pc-darts", "--space", "channels", "--out",
                     str(tmp_path / "t.json")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "SPOS's only" in err[0] and not (tmp_path / "t.json").exists()


@pytest.mark.parametrize("content", [b"[1, 2]", b'"pnas"', b'{"method": "pnas", "rows": "x"}',
                                     b'{"method": "pnas", "seeds": [0], "rows": [{"key": 1}]}',
                                     b'{"method": "pnas", "rows": [{"key": "a", "arch": [],'
                                     b' "accuracy": "high"}]}', bytes(range(256))],
                         ids=["list", "string", "rows-string", "key-int", "acc-string", "bytes"])
def test_resuming_a_file_that_is_not_a_table_is_one_line_naming_it(content, tmp_path, capsys):
    """Issue 29: JSON of another shape, or bytes that are not text, are refused naming the
    file (they were tracebacks: AttributeError, TypeError, a raw UTF-8 error)."""
    f = tmp_path / "F.json"
    f.write_bytes(content)
    assert cli_main(["table", "pnas", "--resume", "--out", str(f)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and str(f) in err[0] and "is not a" in err[0], err
    assert f.read_bytes() == content
