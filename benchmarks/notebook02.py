"""Benchmark: notebook 02 (layers, ranking, methods) Run All, before vs after, in one run.

"After" is the committed tree at ``--after`` (default ``HEAD``); "before" is the same tree with the layer
comparison's files (library, views, notebook) as they were at ``--before``, so that the ratio measures
the shared work of the layer views (one capture, one table for the grid, the ranking and the methods,
one K-way cut per distinct starting partition, each label map scored once) on the same segmentation
core. ``--before-tree`` runs the whole tree at ``--before`` instead (the core as it was, too).

Both trees are exported with ``git archive`` into a temporary folder and executed alternately with
papermill on the pocket model (the notebook's default parameters unless ``--params`` says otherwise),
each in a fresh kernel that imports the package from its own tree. Per-cell durations come from
papermill's metadata, so the time of the grid, the layer table and the methods table can be read per
cell. The machine may be shared: the ratio (before / after, median over repeats) is the result, not the
seconds.

Run: ``python benchmarks/notebook02.py [--repeats 1] [--params '{"n_scenes": 2}']``
-> ``benchmarks/results/notebook02.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "benchmarks" / "results" / "notebook02.json"
NOTEBOOK = "diffcut_lab/notebooks/02_compare_layers.ipynb"
#: the files of the layer comparison (library, views, notebook): what "before" takes from --before
OWNED = (
    "diffcut_lab/layer_comparison.py",
    "diffcut_lab/viz/layers.py",
    "diffcut_lab/viz/_common.py",
    "diffcut_lab/colors.py",
    "diffcut_lab/ablation/summary.py",
    NOTEBOOK,
)


def export(commit: str, dest: Path, overlay: tuple[str, str] | None = None) -> Path:
    """The tree of ``commit`` in ``dest``; ``overlay = (commit, ...)`` replaces :data:`OWNED` from it."""
    dest.mkdir(parents=True)
    archive = subprocess.run(["git", "-C", str(ROOT), "archive", commit], check=True, capture_output=True).stdout
    subprocess.run(["tar", "-x", "-C", str(dest)], input=archive, check=True)
    if overlay is not None:
        for path in OWNED:
            text = subprocess.run(["git", "-C", str(ROOT), "show", f"{overlay[0]}:{path}"], capture_output=True)
            if text.returncode == 0:
                (dest / path).write_bytes(text.stdout)
    return dest


def run_notebook(tree: Path, params: dict[str, Any], workdir: Path) -> dict[str, Any]:
    """Execute the tree's notebook 02 in a fresh kernel importing that tree; wall time and cell times."""
    code = (
        "import json, sys, time, papermill as pm\n"
        "t0 = time.perf_counter()\n"
        "pm.execute_notebook(sys.argv[1], sys.argv[2], parameters=json.loads(sys.argv[3]), cwd=sys.argv[4],\n"
        "                    progress_bar=False, kernel_name='python3', execution_timeout=1800)\n"
        "print(json.dumps({'wall': time.perf_counter() - t0}))\n"
    )
    out = workdir / f"out-{tree.name}.ipynb"
    env = {**os.environ, "PYTHONPATH": str(tree), "TQDM_DISABLE": "1", "HF_HUB_OFFLINE": "1"}
    res = subprocess.run([sys.executable, "-c", code, str(tree / NOTEBOOK), str(out), json.dumps(params),
                          str(workdir)], env=env, capture_output=True, text=True)  # fmt: skip
    if res.returncode:
        raise RuntimeError(f"notebook 02 of {tree} failed:\n{res.stderr[-3000:]}")
    wall = json.loads(res.stdout.strip().splitlines()[-1])["wall"]
    nb = json.loads(out.read_text())
    cells = [{"id": c.get("id"), "first_line": "".join(c["source"]).splitlines()[0][:70],
              "seconds": c["metadata"].get("papermill", {}).get("duration")}
             for c in nb["cells"] if c["cell_type"] == "code"]  # fmt: skip
    errors = [o for c in nb["cells"] if c["cell_type"] == "code" for o in c["outputs"] if o["output_type"] == "error"]
    return {"wall": wall, "cells": cells, "errors": len(errors)}


def summarize(runs: dict[str, list[dict[str, Any]]], *, before: str, after: str, args: argparse.Namespace,
              params: dict[str, Any]) -> dict[str, Any]:  # fmt: skip
    """The result of the repeats done so far (medians, ratio), written to ``args.out``."""
    walls = {k: [x["wall"] for x in v] for k, v in runs.items()}
    ratios = [b / a for b, a in zip(walls["before"], walls["after"])]
    result = {
        "benchmark": "notebook02", "before": before, "after": after, "before_tree": args.before_tree,
        "params": params, "repeats": len(ratios), "machine": platform.platform(), "cpus": os.cpu_count(),
        "load_average": os.getloadavg(), "wall_before_s": statistics.median(walls["before"]),
        "wall_after_s": statistics.median(walls["after"]), "ratio_before_over_after": statistics.median(ratios),
        "runs": runs,
    }  # fmt: skip
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1) + "\n")
    return result


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--before", default="c9745e5~1", help="the commit before the shared work (default c9745e5~1)")
    ap.add_argument("--after", default="HEAD")
    ap.add_argument("--before-tree", action="store_true", help="run the whole tree at --before as 'before'")
    ap.add_argument("--repeats", type=int, default=1)
    ap.add_argument("--params", default="{}", help="papermill parameters as JSON (default: the notebook's)")
    ap.add_argument("--out", type=Path, default=OUT)
    args = ap.parse_args(argv)
    params = json.loads(args.params)
    rev = lambda c: subprocess.run(["git", "-C", str(ROOT), "rev-parse", c], check=True, capture_output=True,  # noqa: E731
                                   text=True).stdout.strip()  # fmt: skip
    before, after = rev(args.before), rev(args.after)
    runs: dict[str, list[dict[str, Any]]] = {"before": [], "after": []}
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        trees = {
            "after": export(after, tmp / "after"),
            "before": export(before, tmp / "before") if args.before_tree
            else export(after, tmp / "before", overlay=(before, after)),
        }  # fmt: skip
        for r in range(args.repeats):
            order = ("before", "after") if r % 2 == 0 else ("after", "before")
            for name in order:
                work = tmp / f"work-{name}-{r}"
                work.mkdir()
                t0 = time.perf_counter()
                runs[name].append(run_notebook(trees[name], params, work))
                print(f"repeat {r} {name}: {runs[name][-1]['wall']:.1f} s ({time.perf_counter() - t0:.1f} s with "
                      "start-up)", flush=True)  # fmt: skip
        result = summarize(runs, before=before, after=after, args=args, params=params)  # kept after each repeat
    print(f"before {result['wall_before_s']:.1f} s, after {result['wall_after_s']:.1f} s: "
          f"{result['ratio_before_over_after']:.2f}x -> {args.out}")  # fmt: skip
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
