"""Recorded run summaries carry device and date, and load back newest first."""
import json

import nas_tutorial as nt
from nas_tutorial.run import records as runs


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


def test_search_step_table_reads_the_shipped_benchmark_record():
    from pathlib import Path

    root = Path(nt.__file__).resolve().parent.parent / "data" / "runs"
    run = next(r for r in nt.runs.load_runs("benchmarks", root=root)
               if any("layout" in row.get("raw", {}) for row in r["payload"]["rows"]))
    text = nt.runs.search_step_table(run)
    lines = text.splitlines()
    assert lines[0] == nt.runs.label(run) and len(lines) == 2 + 4  # header + K=1/2/4/8
    k8 = next(row["raw"] for row in run["payload"]["rows"]
              if row.get("raw", {}).get("k") == 8 and "layout" in row["raw"])
    if k8["layout"]["nhwc_ratio"] is None:
        assert lines[-1].rstrip().endswith("failed")


def test_the_operator_count_sees_nested_calls():
    """Issue 26: `make bench` reports the aten operators a step dispatches, nested ones
    counted (F.linear dispatches aten::linear and, inside it, its matmul)."""
    import torch
    import torch.nn.functional as F

    from nas_tutorial.run.measure import count_ops

    x, w = torch.randn(4, 3), torch.randn(5, 3)
    one = count_ops(lambda: torch.relu(x))
    linear = count_ops(lambda: F.linear(x, w))
    assert one >= 1 and linear > 1
    assert count_ops(lambda: [torch.relu(x) for _ in range(10)]) == 10 * one
