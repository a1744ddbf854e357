"""What a seeded quick search finds, per method and seed, through the command line.

Runs ``nas-tutorial search pc-darts|spos|pnas --preset quick --seed S`` (PNAS with the table
oracle, whose children are read, not trained) into a temporary folder and records what each
search picked: the genotype, the best path, the best cell. A refactor that must not change
any search (issue 25) is checked by running this before and after it on one machine:

    python benchmarks/seeded_results.py --out data/runs/seeded-results-before.json
    ... change the code ...
    python benchmarks/seeded_results.py --out /tmp/after.json --against data/runs/seeded-results-before.json

It goes through ``nas_tutorial.run.cli.main`` only, the contract both versions share. Each search
runs in its own process with one thread (the quick presets' setting); about 15 minutes in all
on one CPU core, most of it the two SPOS supernets.
"""
import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

SEARCHES = {  # method -> (extra flags, result file, what to keep from it)
    "pc-darts": ([], "genotype.json", None),
    "spos": ([], "best_path.json", "path"),
    "pnas": (["--oracle", "table"], "best_cell.json", None),
}


def run_one(method: str, seed: int, folder: Path) -> dict:
    flags, result_file, key = SEARCHES[method]
    out = folder / f"{method}-seed{seed}"
    args = ["--threads", "1", "search", method, "--preset", "quick", "--seed", str(seed),
            "--out", str(out), *flags]
    code = f"import sys, nas_tutorial as nt; sys.exit(nt.cli.main({args!r}))"
    t0 = time.perf_counter()
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"{method} seed {seed} failed:\n{done.stderr[-2000:]}")
    found = json.loads((out / result_file).read_text())
    return {"result": found[key] if key else found, "seconds": round(time.perf_counter() - t0, 1)}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--seeds", default="0,1", help="comma-separated search seeds")
    p.add_argument("--methods", default=",".join(SEARCHES))
    p.add_argument("--out", required=True, help="JSON file to write")
    p.add_argument("--against", help="an earlier output: exit 1 where a result differs")
    args = p.parse_args(argv)
    import nas_tutorial as nt

    seeds = [int(s) for s in args.seeds.split(",")]
    record = {"machine": nt.devices.machine("cpu", threads=1), "results": {}}
    with tempfile.TemporaryDirectory() as tmp:
        for method in args.methods.split(","):
            for seed in seeds:
                r = run_one(method, seed, Path(tmp))
                record["results"].setdefault(method, {})[str(seed)] = r
                print(f"{method} seed {seed}: {json.dumps(r['result'])[:120]} ({r['seconds']} s)",
                      flush=True)
    Path(args.out).write_text(json.dumps(record, indent=1) + "\n")
    if args.against:
        before = json.loads(Path(args.against).read_text())["results"]
        diff = [(m, s) for m, per in record["results"].items() for s, r in per.items()
                if before.get(m, {}).get(s, {}).get("result") != r["result"]]
        for m, s in diff:
            print(f"DIFFERENT: {m} seed {s}")
        print("same results" if not diff else f"{len(diff)} results differ")
        return 1 if diff else 0
    return 0


if __name__ == "__main__":
    sys.exit(main())
