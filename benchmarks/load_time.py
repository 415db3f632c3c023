"""Benchmark: the cost of starting up -- imports and ``load_backbone("pocket")``, each in a fresh process.

Every measurement runs in a new Python process (``sys.executable -c ...``), as a notebook kernel or the
command line would; the times are taken inside it with ``time.perf_counter`` (interpreter start-up is
reported apart), repeated ``--repeats`` times, median and fastest kept:

- ``import_torch``: ``import torch``;
- ``import_diffusers``: ``import diffusers`` after torch (the increment);
- ``import_diffcut_lab``: ``import diffcut_lab`` alone (lazy: no torch);
- ``load_pocket``: ``import diffcut_lab; diffcut_lab.load_backbone("pocket")``, all of it;
- ``load_pocket_parts``: the same work in steps, in one process: ``import torch``, ``import diffusers``,
  the package's own modules (``diffcut_lab.backbones``), diffusers' UNet module tree
  (``from diffusers import UNet2DConditionModel``), then ``load_backbone("pocket")`` (what is left: the
  other diffusers imports it needs, reading the config and weights, building the model, the scheduler,
  the conditioning), then a second ``load_backbone("pocket")`` in the same process.

And once, with ``python -X importtime``, where the import time of ``load_backbone("pocket")`` goes: the
modules' own import times summed by package (``torch._dynamo`` and the big diffusers subpackages apart),
with the number of modules each brought in. ``-X importtime`` slows imports down a little, so these are
shares, not timings.

Run: ``python benchmarks/load_time.py [--repeats 5]`` -> ``benchmarks/results/load_time.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from collections import defaultdict
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
OUT = Path(__file__).parent / "results" / "load_time.json"

# each snippet prints one JSON dict of named seconds on its last line
_CLOCK = "import time as _t, json as _j\n_s = _t.perf_counter()\n_r = {}\n"
_LAP = "_r[{name!r}] = _t.perf_counter() - _s; _s = _t.perf_counter()\n"
_END = "print(_j.dumps(_r))\n"


def _snippet(steps: list[tuple[str, str]]) -> str:
    """Python code that runs each ``(name, code)`` step in turn and times it."""
    body = "".join(f"{code}\n" + _LAP.format(name=name) for name, code in steps)
    return _CLOCK + body + _END


SNIPPETS: dict[str, list[tuple[str, str]]] = {
    "import_torch": [("import_torch", "import torch")],
    "import_diffusers": [("import_torch", "import torch"), ("import_diffusers", "import diffusers")],
    "import_diffcut_lab": [("import_diffcut_lab", "import diffcut_lab")],
    "load_pocket": [("load_pocket", "import diffcut_lab\ndiffcut_lab.load_backbone('pocket')")],
    "load_pocket_parts": [
        ("import_torch", "import torch"),
        ("import_diffusers", "import diffusers"),
        ("import_diffcut_lab_backbones", "import diffcut_lab.backbones"),
        ("import_diffusers_unet", "from diffusers import UNet2DConditionModel"),
        ("first_load_rest", "import diffcut_lab\ndiffcut_lab.load_backbone('pocket')"),
        ("second_load", "diffcut_lab.load_backbone('pocket')"),
    ],
}


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env.setdefault("HF_HUB_OFFLINE", "1")
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO), env.get("PYTHONPATH", "")) if p)
    return env


def run_fresh(code: str, *args: str) -> tuple[dict[str, float], float, str]:
    """Run ``code`` in a new interpreter; (its timings, the process's wall seconds, its stderr)."""
    t0 = time.perf_counter()
    proc = subprocess.run(
        [sys.executable, *args, "-c", code], cwd=REPO, env=_env(), capture_output=True, text=True, check=False
    )
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        raise RuntimeError(f"the measured process failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1]), wall, proc.stderr


def _group(module: str) -> str:
    """The bucket a module's import time is counted in."""
    parts = module.split(".")
    if parts[0] == "torch" and len(parts) > 1 and parts[1] in ("_dynamo", "_inductor", "distributed", "fx"):
        return ".".join(parts[:2])
    if parts[0] == "diffusers" and len(parts) > 1:
        if parts[1] == "models" and len(parts) > 2 and parts[2] in ("transformers", "unets", "autoencoders"):
            return ".".join(parts[:3])
        return ".".join(parts[:2])
    return parts[0]


def import_breakdown(steps: list[tuple[str, str]]) -> dict:
    """``-X importtime`` of a snippet: self time and module count per bucket, largest first."""
    _, _, stderr = run_fresh(_snippet(steps), "-X", "importtime")
    self_us: dict[str, int] = defaultdict(int)
    count: dict[str, int] = defaultdict(int)
    for line in stderr.splitlines():
        if not line.startswith("import time:") or "self [us]" in line:
            continue
        own, _cumulative, name = line.split(":", 1)[1].split("|")
        bucket = _group(name.strip())
        self_us[bucket] += int(own)
        count[bucket] += 1
    total = sum(self_us.values())
    rows = sorted(self_us.items(), key=lambda kv: -kv[1])
    return {
        "total_import_s": round(total / 1e6, 3),
        "modules": sum(count.values()),
        "by_package": [
            {"package": k, "self_s": round(v / 1e6, 3), "share": round(v / total, 3), "modules": count[k]}
            for k, v in rows
            if v / total >= 0.005
        ],
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args(argv)
    load_at_start = list(os.getloadavg()) if hasattr(os, "getloadavg") else None
    samples: dict[str, dict[str, list[float]]] = {k: defaultdict(list) for k in SNIPPETS}
    startup: list[float] = []
    for _ in range(args.repeats):  # interleaved, so that a busy moment of the machine hits all alike
        for key, steps in SNIPPETS.items():
            timings, wall, _ = run_fresh(_snippet(steps))
            for name, seconds in timings.items():
                samples[key][name].append(seconds)
            if key == "import_diffcut_lab":
                startup.append(wall - timings["import_diffcut_lab"])
    results = {
        key: {
            name: {"median_s": round(statistics.median(v), 3), "fastest_s": round(min(v), 3)}
            for name, v in by_name.items()
        }
        for key, by_name in samples.items()
    }
    parts = results["load_pocket_parts"]
    imports = ("import_torch", "import_diffusers", "import_diffcut_lab_backbones", "import_diffusers_unet")
    breakdown = import_breakdown(SNIPPETS["load_pocket"])
    doc = {
        "benchmark": "load_time",
        "python": platform.python_version(),
        "cpu_count": os.cpu_count(),
        "load_average_at_start": load_at_start,
        "repeats": args.repeats,
        "interpreter_startup_s": round(statistics.median(startup), 3),
        "results": results,
        "summary_median_s": {
            "import torch": parts["import_torch"]["median_s"],
            "import diffusers (after torch)": parts["import_diffusers"]["median_s"],
            "import diffcut_lab (alone)": results["import_diffcut_lab"]["import_diffcut_lab"]["median_s"],
            "load_backbone('pocket'), fresh process": results["load_pocket"]["load_pocket"]["median_s"],
            "of which imports (torch, diffusers, diffcut_lab, the UNet tree)": round(
                sum(parts[k]["median_s"] for k in imports), 3
            ),
            "of which the rest of the first load": parts["first_load_rest"]["median_s"],
            "a second load in the same process": parts["second_load"]["median_s"],
        },
        "import_time_by_package": breakdown,
    }
    for line, value in doc["summary_median_s"].items():
        print(f"{line}: {value:.3f} s")
    print("import time by package (-X importtime, self times):")
    for row in breakdown["by_package"][:15]:
        print(f"  {row['package']:<36} {row['self_s']:6.3f} s  {100 * row['share']:5.1f}%  {row['modules']} modules")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(doc, indent=2) + "\n")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
