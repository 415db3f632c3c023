"""Benchmark: how long the interactive and test-support pieces take, the times the tests used to assert.

Wall-clock limits do not belong in pass/fail tests on a shared machine; they are measured here instead,
best of ``--repeats``, each next to a reference measured in the same run (a plain 512x512 float32
matrix product, so a slow machine shows as a slow reference rather than as a regression):

- ``tiny_backbone_build`` / ``tiny_forward``: :func:`diffcut_lab.testing.tiny_backbone` per family, and
  one UNet pass of batch 2 (targets on an idle 2-core CPU: build < 1 s, forward < 0.2 s);
- ``scene``: one synthetic 128 px scene (target ~5 ms);
- ``stepper_alpha``: the cut stepper's recompute after an alpha change on a 32x32 grid (target < 1 s,
  "live" in the notebook);
- ``notebook/NAME`` (``--notebooks``): each notebook executed with papermill on the pocket model, with
  the parameters the notebook tests use (target < 120 s each).

Run: ``python benchmarks/responsiveness.py [--repeats 3] [--notebooks]``
-> ``benchmarks/results/responsiveness.json``.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))
OUT = ROOT / "benchmarks" / "results" / "responsiveness.json"


def best_of(repeats: int, fn) -> float:
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times)


def reference(repeats: int) -> float:
    a = torch.rand(512, 512)
    return best_of(repeats, lambda: [a @ a for _ in range(10)])


def tiny_models(repeats: int) -> dict[str, float]:
    from diffcut_lab.testing import TINY_FAMILIES, tiny_backbone

    out = {}
    for family in TINY_FAMILIES:
        tiny_backbone(family)  # warm the imports
        out[f"tiny_backbone_build/{family}"] = best_of(repeats, lambda f=family: tiny_backbone(f))
        bb = tiny_backbone(family)
        x_t = bb.add_noise(bb.encode(torch.rand(2, 3, bb.image_size, bb.image_size)), 50)
        out[f"tiny_forward/{family}"] = best_of(repeats, lambda b=bb, x=x_t: b.forward(x, 50))
    return out


def scene(repeats: int) -> dict[str, float]:
    from diffcut_lab.datasets.synthetic import make_scene

    return {"scene": best_of(repeats, lambda: [make_scene(s, 128) for s in range(20)]) / 20}


def stepper(repeats: int) -> dict[str, float]:
    from test_stepper import _blocks

    import diffcut_lab as dl
    from diffcut_lab.viz import stepper as st

    feats, img = _blocks(32, 32, seed=1)
    tree = dl.recursive_ncut(dl.affinity(feats, alpha=10.0), tau=0.5, grid=(32, 32))
    app = st.cut_stepper(tree, img, features=feats)
    times = []
    for i in range(repeats):
        app.set_alpha(8.0 + (i % 2))
        times.append(app.last_update_s)
    return {"stepper_alpha": min(times)}


def notebooks() -> dict[str, float]:
    import papermill as pm
    from test_notebooks import CI_PARAMETERS

    out = {}
    with tempfile.TemporaryDirectory() as tmp:
        for name, params in sorted(CI_PARAMETERS.items()):
            t0 = time.perf_counter()
            pm.execute_notebook(
                str(ROOT / "notebooks" / f"{name}.ipynb"),
                str(Path(tmp) / f"{name}.ipynb"),
                parameters=dict(params),
                cwd=tmp,
                progress_bar=False,
                kernel_name="python3",
            )
            out[f"notebook/{name}"] = time.perf_counter() - t0
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--notebooks", action="store_true", help="also execute the notebooks (minutes)")
    ap.add_argument("--out", type=Path, default=OUT)
    args = ap.parse_args(argv)
    torch.manual_seed(0)
    ref = reference(args.repeats)
    seconds = {**tiny_models(args.repeats), **scene(args.repeats), **stepper(args.repeats)}
    if args.notebooks:
        seconds.update(notebooks())
    result = {
        "machine": platform.platform(),
        "threads": torch.get_num_threads(),
        "reference_s": ref,
        "seconds": seconds,
        "ratio_to_reference": {k: v / ref for k, v in seconds.items()},
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    width = max(map(len, seconds))
    print(f"{'reference (10 x 512^2 matmul)':<{width}}  {ref * 1e3:9.1f} ms")
    for k, v in seconds.items():
        print(f"{k:<{width}}  {v * 1e3:9.1f} ms  ({v / ref:7.1f} x reference)")
    return 0 if np.isfinite(list(seconds.values())).all() else 1


if __name__ == "__main__":
    raise SystemExit(main())
