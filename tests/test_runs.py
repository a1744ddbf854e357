"""Recorded run summaries carry device and date, and load back newest first."""
import json

from nas_tutorial import runs


def test_record_and_load(tmp_path):
    a = runs.record("bench", {"x": 1}, device="cpu", root=tmp_path, name="a")
    data = json.loads(a.read_text())
    assert data["device"].startswith("CPU") and data["recorded_at"][:2] == "20"
    runs.record("search", {"y": 2}, device="cpu", root=tmp_path, name="b")
    (tmp_path / "broken.json").write_text("{")
    assert [r["payload"] for r in runs.load_runs(root=tmp_path)] in ([{"y": 2}, {"x": 1}],
                                                                     [{"x": 1}, {"y": 2}])
    only = runs.load_runs("bench", root=tmp_path)
    assert len(only) == 1 and "bench on CPU" in runs.label(only[0])
