"""The Genotype value: published cells, JSON round-trip, validation with clear errors."""
import json

import pytest

import nas_tutorial as nt
from nas_tutorial.genotypes import Genotype, GenotypeError, resolve


@pytest.mark.parametrize("name", sorted(nt.GENOTYPES))
def test_json_round_trip(name, tmp_path):
    g = nt.GENOTYPES[name]
    assert Genotype.from_json(g.to_json()) == g
    path = tmp_path / "g.json"
    g.to_json(path)
    assert Genotype.load(path) == g
    assert resolve(str(path)) == g
    assert hash(Genotype.load(path)) == hash(g)


def test_published_cells_match_reference():
    pc = nt.GENOTYPES["PC_DARTS"]
    assert pc.normal[:2] == (("sep_conv_3x3", 1), ("skip_connect", 0))
    assert pc.reduce[-1] == ("sep_conv_3x3", 2)
    pnas = nt.GENOTYPES["PNASNET_5"]
    assert pnas.normal == pnas.reduce and pnas.normal_concat == (2, 3, 4, 5, 6)
    assert pnas.nodes()[3] == (("sep_conv_3x3", 4), ("max_pool_3x3", 1))


@pytest.mark.parametrize("bad, message", [
    ({"normal": [["sep_conv_3x3", 0]], "normal_concat": [2]}, "even"),
    ({"normal": [["conv_9x9", 0], ["sep_conv_3x3", 1]], "normal_concat": [2]}, "unknown op"),
    ({"normal": [["sep_conv_3x3", 2], ["sep_conv_3x3", 1]], "normal_concat": [2]}, "out of range"),
    ({"normal": [["sep_conv_3x3", 0], ["sep_conv_3x3", 1]], "normal_concat": [5]}, "concat"),
    ({"normal": [["sep_conv_3x3", 0], ["none", 1]], "normal_concat": [2]}, "unknown op"),
    ({"normal": [["sep_conv_3x3"], ["x", 1]], "normal_concat": [2]}, "malformed"),
    ({"reduce": []}, "missing"),
    ([1, 2], "JSON object"),
])
def test_invalid_genotypes_raise_clear_errors(bad, message):
    with pytest.raises(GenotypeError, match=message):
        Genotype.from_json(json.dumps(bad))


def test_not_json_and_unknown_name():
    with pytest.raises(GenotypeError, match="not valid JSON"):
        Genotype.from_json("{nope")
    with pytest.raises(GenotypeError, match="unknown genotype 'DARTS_V3'"):
        resolve("DARTS_V3")
    with pytest.raises(GenotypeError, match="cannot read"):
        Genotype.load("/nonexistent/g.json")


def test_genotype_is_immutable_and_hashable():
    g = nt.GENOTYPES["DARTS_V2"]
    with pytest.raises(Exception):
        g.normal = ()
    assert len({g, nt.GENOTYPES["DARTS_V2"], nt.GENOTYPES["DARTS_V1"]}) == 2


def test_notebook_repr_draws_the_cell_as_svg_and_png():
    bundle = nt.GENOTYPES["PC_DARTS"]._repr_mimebundle_()
    assert bundle["text/plain"] == repr(nt.GENOTYPES["PC_DARTS"])
    if not nt.viz.has_dot():
        pytest.skip("graphviz 'dot' not installed")
    svg = bundle["image/svg+xml"]
    assert svg.lstrip().startswith("<?xml") or "<svg" in svg
    assert "sep_conv_3x3" in svg
    assert bundle["image/png"].startswith("iVBOR")  # base64 of the PNG signature


def test_json_depth_counts_nesting_and_ignores_brackets_in_strings():
    from nas_tutorial.genotypes import MAX_JSON_DEPTH, json_depth

    assert json_depth(nt.GENOTYPES["PC_DARTS"].to_json()) == 3
    assert json_depth('["[[[{", {"a": [1, "]]"]}]') == 3
    assert json_depth('"\\"[["') == 0  # an escaped quote does not end the string
    deep = "[" * (MAX_JSON_DEPTH + 1) + "]" * (MAX_JSON_DEPTH + 1)
    json.loads(deep)  # every Python's parser reads it ...
    with pytest.raises(GenotypeError, match="nested too deeply"):  # ... the project refuses it
        Genotype.from_json(deep)
