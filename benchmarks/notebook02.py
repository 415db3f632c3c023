"""Benchmark: notebook 02 (layers, ranking, methods) Run All, before vs after, in one run.

"After" is the committed tree at ``--after`` (default ``HEAD``); "before" is the same tree with the layer
comparison's files (library, views, notebook) as they were at ``--before``, so that the ratio measures
the shared work of the layer views (one capture, one table for the grid, the ranking and the methods,
one K-way cut per distinct starting partition, each label map scored once) on the same segmentation
core. ``--before-tree`` runs the whole tree at ``--before`` instead (the core as it was, too). ``--before-dir DIR`` runs the tree checked out in ``DIR`` instead (e.g. a clean
``git worktree add /tmp/nb02_base HEAD`` made before a change, timed against the change's commit).

Both trees are exported with ``git archive`` into a temporary folder and executed alternately with
papermill on the pocket model (the notebook's default parameters unless ``--params`` says otherwise),
each in a fresh kernel that imports the package from its own tree. Per-cell durations come from
papermill's metadata, so the time of the grid, the layer table and the methods table can be read per
cell. The machine may be shared: the ratio (before / after, median over repeats) is the result, not the
seconds.

``--calls`` times the three calls instead, in one process on one capture: ``layer_scores`` (every layer,
timestep, scene and tau), ``method_comparison`` (before: its own capture and every method cut alone;
after: reading the layer table) and ``layer_grid`` (before: from the cache; after: drawing the table's
rows), the modules of ``--before`` loaded beside the current ones and run alternately.

Run: ``python benchmarks/notebook02.py [--repeats 1] [--params '{"n_scenes": 2}'] [--before-dir DIR]``
-> ``benchmarks/results/notebook02.json``; ``--calls`` -> ``benchmarks/results/notebook02_calls.json``.
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
    "diffcut_lab/selection.py",
    NOTEBOOK,
)


def export(commit: str, dest: Path, overlay: tuple[str, str] | None = None) -> Path:
    """The tree of ``commit`` in ``dest``; ``overlay = (commit, ...)`` replaces :data:`OWNED` from it."""
    dest.mkdir(parents=True)
    archive = subprocess.run(
        ["git", "-C", str(ROOT), "archive", commit], check=True, capture_output=True
    ).stdout
    subprocess.run(["tar", "-x", "-C", str(dest)], input=archive, check=True)
    if overlay is not None:
        for path in OWNED:
            text = subprocess.run(
                ["git", "-C", str(ROOT), "show", f"{overlay[0]}:{path}"], capture_output=True
            )
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
    errors = [
        o
        for c in nb["cells"]
        if c["cell_type"] == "code"
        for o in c["outputs"]
        if o["output_type"] == "error"
    ]
    return {"wall": wall, "cells": cells, "errors": len(errors)}


def _module_at(commit: str, path: str, name: str) -> Any:
    """The module ``path`` as it was at ``commit``, imported as ``name`` inside the package."""
    import importlib.util

    source = subprocess.run(
        ["git", "-C", str(ROOT), "show", f"{commit}:{path}"], check=True, capture_output=True
    )
    folder = Path(tempfile.mkdtemp())
    file = folder / Path(path).name
    file.write_bytes(source.stdout)
    spec = importlib.util.spec_from_file_location(name, file)
    module = importlib.util.module_from_spec(spec)
    module.__package__ = name.rsplit(".", 1)[0]
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


def time_calls(before: str, params: dict[str, Any], repeats: int) -> dict[str, Any]:
    """Seconds of layer_scores, method_comparison and layer_grid, before and after, alternately."""
    import diffcut_lab as dl
    from diffcut_lab import viz

    old = _module_at(before, "diffcut_lab/layer_comparison.py", "diffcut_lab._layer_comparison_before")
    old_views = _module_at(before, "diffcut_lab/viz/layers.py", "diffcut_lab.viz._layers_before")
    old_views.layer_scores = old.layer_scores  # the old grid cut with the old table
    p = {"timesteps": [10, 50, 200], "n_scenes": 3, "taus": [0.3, 0.5, 0.7, 0.9], "config": {},
         "walk_steps": [1, 4], **params}  # fmt: skip
    cfg = dl.DiffCutConfig.from_dict({"refine": "none", **p["config"]})  # as notebook 02 reads its parameters
    bb = dl.load_backbone("pocket")
    scenes = dl.load_dataset("synthetic", split="val", n=2 * p["n_scenes"], size=bb.image_size)
    select, test = list(range(p["n_scenes"])), list(range(p["n_scenes"], 2 * p["n_scenes"]))
    layer = dl.resolve_layers(bb, "diffcut")[0]
    images, gts = [s.image for s in scenes], [s.label for s in scenes]
    cache = dl.capture(
        bb, images, layers=["attn1", f"{layer}.probs"], timesteps=sorted({*p["timesteps"], 50})
    )
    n = scenes.info.num_classes
    methods = {"DiffCut": cfg, "K-way": cfg.replace(partition="kway")}
    methods |= {
        f"walk {k}": dl.DiffCutConfig(affinity="attention", walk_steps=k, refine="none")
        for k in p["walk_steps"]
    }
    kw = {"select": select, "test": test, "taus": p["taus"], "num_classes": n, "layer": layer, "timestep": 50}
    s0 = test[0]
    times: dict[str, list[float]] = {}

    def clock(key: str, fn: Any) -> Any:
        t0 = time.perf_counter()
        out = fn()
        times.setdefault(key, []).append(time.perf_counter() - t0)
        return out

    def run_before() -> None:
        clock("layer_scores before", lambda: old.layer_scores(cache, gts, num_classes=n, timesteps=p["timesteps"],
                                                              taus=p["taus"], alpha=cfg.alpha, refine="none"))  # fmt: skip
        pair = dl.capture(bb, images, layers=[layer, f"{layer}.probs"], timesteps=50)
        clock("method_comparison before", lambda: old.method_comparison(pair, gts, methods, **kw))
        clock("layer_grid before", lambda: old_views.layer_grid(cache, gt=gts[s0], image_index=s0, num_classes=n,
                                                                timesteps=p["timesteps"], tau=cfg.tau, alpha=cfg.alpha,
                                                                refine="none"))  # fmt: skip

    def run_after() -> None:
        rows = clock("layer_scores after", lambda: dl.layer_scores(
            cache, gts, num_classes=n, timesteps=p["timesteps"], taus=sorted({*p["taus"], cfg.tau}), config=cfg,
            keep_labels=True))  # fmt: skip
        clock("method_comparison after", lambda: dl.method_comparison(cache, gts, methods, scores=rows, **kw))
        clock("layer_grid after", lambda: viz.layer_grid(rows, image=images[s0], image_index=s0, tau=cfg.tau))

    for r in range(repeats):
        for run in (run_before, run_after) if r % 2 == 0 else (run_after, run_before):
            run()
    medians = {k: statistics.median(v) for k, v in times.items()}
    ratios = {name: medians[f"{name} before"] / medians[f"{name} after"]
              for name in ("layer_scores", "method_comparison", "layer_grid")}  # fmt: skip
    return {"params": p, "seconds": times, "median_s": medians, "ratio_before_over_after": ratios}


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
    ap.add_argument(
        "--before", default="c9745e5~1", help="the commit before the shared work (default c9745e5~1)"
    )
    ap.add_argument("--after", default="HEAD")
    ap.add_argument("--before-tree", action="store_true", help="run the whole tree at --before as 'before'")
    ap.add_argument("--before-dir", type=Path, default=None,
                    help="run the tree checked out in this folder as 'before' (a git worktree)")  # fmt: skip
    ap.add_argument("--repeats", type=int, default=1)
    ap.add_argument("--params", default="{}", help="papermill parameters as JSON (default: the notebook's)")
    ap.add_argument("--out", type=Path, default=None)
    ap.add_argument("--calls", action="store_true", help="time the three calls in one process instead")
    args = ap.parse_args(argv)
    params = json.loads(args.params)
    if args.calls:
        out = args.out or OUT.with_name("notebook02_calls.json")
        result = {"benchmark": "notebook02 calls", "before": args.before, "repeats": args.repeats,
                  "machine": platform.platform(), "cpus": os.cpu_count(),
                  **time_calls(args.before, params, args.repeats), "load_average": os.getloadavg()}  # fmt: skip
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(result, indent=1) + "\n")
        print(
            json.dumps(result["median_s"], indent=1),
            json.dumps(result["ratio_before_over_after"]),
            f"-> {out}",
        )
        return 0
    args.out = args.out or OUT
    rev = lambda c: subprocess.run(["git", "-C", str(ROOT), "rev-parse", c], check=True, capture_output=True,  # noqa: E731
                                   text=True).stdout.strip()  # fmt: skip
    before = str(args.before_dir) if args.before_dir else rev(args.before)
    after = rev(args.after)
    runs: dict[str, list[dict[str, Any]]] = {"before": [], "after": []}
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        trees = {
            "after": export(after, tmp / "after"),
            "before": args.before_dir.resolve() if args.before_dir
            else export(before, tmp / "before") if args.before_tree
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
            result = summarize(
                runs, before=before, after=after, args=args, params=params
            )  # kept after each repeat
    print(f"before {result['wall_before_s']:.1f} s, after {result['wall_after_s']:.1f} s: "
          f"{result['ratio_before_over_after']:.2f}x -> {args.out}")  # fmt: skip
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
