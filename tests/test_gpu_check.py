"""`make gpu-check DRY=1`: the GPU session's script runs end to end on the CPU, so it works
the day a GPU is lent (no GPU session has to debug it on its few minutes)."""
import json
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent


@pytest.mark.fashion  # its CLI verbs run the quick preset (Fashion-MNIST) in a subprocess
def test_gpu_check_dry_run_passes_and_writes_its_record(tmp_path):
    proc = subprocess.run([sys.executable, str(REPO / "benchmarks" / "gpu_check.py"), "--dry",
                           "--out", str(tmp_path)], capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    record = json.loads((tmp_path / "gpu-check-dry.json").read_text())
    assert record["kind"] == "gpu-check" and record["machine"]["fingerprint"]
    payload = record["payload"]
    assert payload["cuda_tests"]["ok"] and "passed" in payload["cuda_tests"]["summary"]
    for k in ("pc_darts_k4", "darts_k1"):
        assert payload["search_step"][k]["ours_s"] > 0 and payload["search_step"][k]["official_s"] > 0
    assert payload["second_order"]["cosine_fp32"] > 0.999
    assert all(v["rc"] == 0 for v in payload["cli"].values())
