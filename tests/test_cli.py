"""The nas-tutorial command: info output and its error paths (exit 2, one line)."""
import json

import pytest

import nas_tutorial as nt
from nas_tutorial.cli import main


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
