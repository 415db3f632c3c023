"""Benchmark: the cost of starting -- the command line and ``load_backbone("pocket")``, in fresh processes.

Every measurement runs in a new Python process, as the command line or a notebook kernel would, and is
repeated ``--repeats`` times (median and fastest kept). Two parts:

**Commands** (``--commands``): time to first work of the command line, from the moment the process is
spawned (interpreter start-up included):

- ``help``: ``diffcut-lab --help``, until it exits;
- ``layers``: ``diffcut-lab layers --model pocket``, until it exits (printing the table is its work);
- ``segment``: ``diffcut-lab segment photo.png --model pocket`` on one 256 x 320 photo (or ``--photo
  PATH``, e.g. ``examples/images/cat.jpg``): until the first image is handed to the segmentation (the
  model loaded and the settings checked: ``first_work_s``) and until it exits (``exit_s``).

The pocket model is built without diffusers (``diffcut_lab.pocket.unet``), so neither command imports
it; with ``--reference`` an older checkout shows what diffusers' import used to cost.

Each process's CPU time (user + system, from ``wait4``) is kept too: on a busy machine it moves much less
than the wall time. With ``--reference DIR`` (an older checkout, e.g. ``git worktree add /tmp/ref
HEAD~3``) each command also runs from that tree, alternating with this one, and the ratios
``this / reference`` of the medians are reported. Once per command and tree, ``python -X importtime``
gives the import profile: modules imported, their own import times summed by package (``torch._dynamo``
and the big diffusers subpackages apart) and which heavy packages were loaded at all. ``-X importtime``
slows imports a little, so these are shares, not timings. ``--no-bytecode`` adds one run per command with
an empty bytecode cache (``PYTHONPYCACHEPREFIX`` set to an empty folder, nothing written): every module is
compiled from source, as on a first call in an environment installed without bytecode.

**Steps** (``--steps``, the earlier measurements): ``import torch``; ``import diffusers`` after torch
(what the pocket model no longer pays); ``import diffcut_lab`` alone (lazy: no torch);
``load_backbone("pocket")`` whole; and the same work in steps in one process (torch,
``diffcut_lab.backbones``, the first load, a second load).

Run: ``python benchmarks/load_time.py [--repeats 5] [--reference /tmp/ref] [--photo PATH] [--no-bytecode]
[--steps]``
-> ``benchmarks/results/load_time.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
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
        ("import_diffcut_lab_backbones", "import diffcut_lab.backbones"),
        ("first_load_rest", "import diffcut_lab\ndiffcut_lab.load_backbone('pocket')"),
        ("second_load", "diffcut_lab.load_backbone('pocket')"),
    ],
}

#: the command lines measured (arguments after ``diffcut-lab``; PHOTO and OUTDIR are filled in)
COMMANDS: dict[str, list[str]] = {
    "help": ["--help"],
    "layers": ["layers", "--model", "pocket"],
    "segment": ["segment", "PHOTO", "--model", "pocket", "--out", "OUTDIR", "--quiet"],
}

# Runs the command line in the measured process. For segment, the moment the first images are handed to
# the segmentation is written to stderr as an epoch time (the parent compares it with its spawn time).
_CLI = """\
import sys, time
argv = {argv!r}
if argv[0] == "segment":
    import diffcut_lab.commands.segment as _seg
    _inner = getattr(_seg, "_segment_all", None)
    if _inner is not None:
        def _first_work(*a, **k):
            print("FIRST_WORK", repr(time.time()), file=sys.stderr, flush=True)
            return _inner(*a, **k)
        _seg._segment_all = _first_work
from diffcut_lab.cli import main
try:
    code = main(argv)
except SystemExit as err:  # --help
    code = err.code
sys.exit(code or 0)
"""

#: packages whose presence after a command tells what it paid for
HEAVY = (
    "torch",
    "diffusers",
    "transformers",
    "accelerate",
    "torch._dynamo",
    "sympy",
    "scipy",
    "pandas",
    "plotly",
)


def _env(tree: Path = REPO, **extra: str) -> dict[str, str]:
    env = dict(os.environ)
    env.setdefault("HF_HUB_OFFLINE", "1")
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(tree), env.get("PYTHONPATH", "")) if p)
    env.update(extra)
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


def run_command(
    name: str,
    tree: Path,
    workdir: Path,
    *,
    python_args: tuple[str, ...] = (),
    env: dict[str, str] | None = None,
) -> dict:
    """One fresh ``diffcut-lab <name> ...`` process from ``tree``: wall seconds to exit (and, for segment,
    to its first work), CPU seconds, and its stderr."""
    photo = next(workdir.glob("photo.*"))
    argv = [a.replace("PHOTO", str(photo)).replace("OUTDIR", str(workdir / "out")) for a in COMMANDS[name]]
    with tempfile.TemporaryFile() as err:
        start_epoch, t0 = time.time(), time.perf_counter()
        proc = subprocess.Popen(
            [sys.executable, *python_args, "-c", _CLI.format(argv=argv)],
            cwd=workdir, env=env or _env(tree), stdout=subprocess.DEVNULL, stderr=err,
        )  # fmt: skip
        _, status, usage = os.wait4(proc.pid, 0)
        wall = time.perf_counter() - t0
        proc.returncode = os.waitstatus_to_exitcode(status)
        err.seek(0)
        stderr = err.read().decode(errors="replace")
    if proc.returncode != 0:
        raise RuntimeError(f"diffcut-lab {name} from {tree} failed ({proc.returncode}):\n{stderr[-3000:]}")
    out = {"exit_s": wall, "cpu_s": usage.ru_utime + usage.ru_stime}
    marks = [line.split()[1] for line in stderr.splitlines() if line.startswith("FIRST_WORK ")]
    if marks:
        out["first_work_s"] = float(marks[0]) - start_epoch
    return {**out, "stderr": stderr}


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


def parse_importtime(stderr: str) -> dict:
    """``-X importtime`` output: self time and module count per bucket, largest first, and which heavy
    packages were imported at all."""
    self_us: dict[str, int] = defaultdict(int)
    count: dict[str, int] = defaultdict(int)
    names: set[str] = set()
    for line in stderr.splitlines():
        if not line.startswith("import time:") or "self [us]" in line:
            continue
        own, _cumulative, name = line.split(":", 1)[1].split("|")
        name = name.strip()
        names.add(name)
        bucket = _group(name)
        self_us[bucket] += int(own)
        count[bucket] += 1
    total = sum(self_us.values()) or 1
    rows = sorted(self_us.items(), key=lambda kv: -kv[1])
    return {
        "total_import_s": round(total / 1e6, 3),
        "modules": sum(count.values()),
        "heavy_packages_imported": [h for h in HEAVY if h in names],
        "by_package": [
            {"package": k, "self_s": round(v / 1e6, 3), "share": round(v / total, 3), "modules": count[k]}
            for k, v in rows
            if v / total >= 0.005
        ],
    }


def import_breakdown(steps: list[tuple[str, str]]) -> dict:
    """``-X importtime`` of a snippet: self time and module count per bucket, largest first."""
    _, _, stderr = run_fresh(_snippet(steps), "-X", "importtime")
    return parse_importtime(stderr)


def _photo(path: Path) -> None:
    """A 256 x 320 photo-like test image: smooth colour regions and texture."""
    import numpy as np
    from PIL import Image

    y, x = np.mgrid[0:256, 0:320] / 64.0
    rng = np.random.default_rng(0)
    img = np.stack([np.sin(x) * 0.5 + 0.5, (y > 2).astype(float), np.cos(x + y) * 0.5 + 0.5], axis=-1)
    img = np.clip(img * 200 + rng.normal(0, 8, img.shape), 0, 255).astype(np.uint8)
    Image.fromarray(img).save(path)


def _stats(values: list[float]) -> dict[str, float]:
    return {"median_s": round(statistics.median(values), 3), "fastest_s": round(min(values), 3)}


def measure_commands(
    names: list[str],
    repeats: int,
    reference: Path | None,
    *,
    no_bytecode: bool = False,
    profile: bool = True,
    photo: Path | None = None,
) -> dict:
    """Fresh-process time to first work of each command, from this tree (and ``reference``), alternated;
    ``segment`` reads ``photo`` (default: a generated 256 x 320 photo)."""
    trees = {"this": REPO, **({"reference": reference} if reference is not None else {})}
    samples: dict[str, dict[str, dict[str, list[float]]]] = {
        t: {n: defaultdict(list) for n in names} for t in trees
    }
    with tempfile.TemporaryDirectory(prefix="load_time_") as tmp:
        work = Path(tmp)
        if photo is None:
            _photo(work / "photo.png")
        else:
            shutil.copyfile(photo, work / f"photo{photo.suffix}")
        for _ in range(repeats):  # interleaved, so that a busy moment of the machine hits all alike
            for name in names:
                for label, tree in trees.items():
                    run = run_command(name, tree, work)
                    for key in ("exit_s", "cpu_s", "first_work_s"):
                        if key in run:
                            samples[label][name][key].append(run[key])
        result: dict = {
            label: {name: {key: _stats(v) for key, v in by_key.items()} for name, by_key in by_name.items()}
            for label, by_name in samples.items()
        }
        if reference is not None:
            result["ratio_this_over_reference"] = {
                name: {
                    key: round(
                        result["this"][name][key]["median_s"] / result["reference"][name][key]["median_s"], 3
                    )
                    for key in result["this"][name]
                    if key in result["reference"][name]
                }
                for name in names
            }
        if profile:
            result["import_profile"] = {
                label: {name: parse_importtime(run_command(name, tree, work, python_args=("-X", "importtime"))["stderr"])
                        for name in names}
                for label, tree in trees.items()
            }  # fmt: skip
        if no_bytecode:
            result["no_bytecode"] = {}
            for label, tree in trees.items():
                result["no_bytecode"][label] = {}
                for name in names:
                    with tempfile.TemporaryDirectory(prefix="pyc_") as empty:
                        env = _env(tree, PYTHONPYCACHEPREFIX=empty, PYTHONDONTWRITEBYTECODE="1")
                        run = run_command(name, tree, work, env=env)
                    result["no_bytecode"][label][name] = {
                        k: round(v, 3) for k, v in run.items() if k != "stderr"
                    }
    return result


def measure_steps(repeats: int) -> dict:
    """The earlier step-by-step measurements of imports and ``load_backbone("pocket")``."""
    samples: dict[str, dict[str, list[float]]] = {k: defaultdict(list) for k in SNIPPETS}
    startup: list[float] = []
    for _ in range(repeats):
        for key, steps in SNIPPETS.items():
            timings, wall, _ = run_fresh(_snippet(steps))
            for name, seconds in timings.items():
                samples[key][name].append(seconds)
            if key == "import_diffcut_lab":
                startup.append(wall - timings["import_diffcut_lab"])
    results = {key: {name: _stats(v) for name, v in by_name.items()} for key, by_name in samples.items()}
    parts = results["load_pocket_parts"]
    imports = ("import_torch", "import_diffcut_lab_backbones")
    return {
        "interpreter_startup_s": round(statistics.median(startup), 3),
        "results": results,
        "summary_median_s": {
            "import torch": parts["import_torch"]["median_s"],
            "import diffusers (after torch; the pocket model does not)": results["import_diffusers"][
                "import_diffusers"
            ]["median_s"],
            "import diffcut_lab (alone)": results["import_diffcut_lab"]["import_diffcut_lab"]["median_s"],
            "load_backbone('pocket'), fresh process": results["load_pocket"]["load_pocket"]["median_s"],
            "of which imports (torch, diffcut_lab.backbones)": round(
                sum(parts[k]["median_s"] for k in imports), 3
            ),
            "of which the rest of the first load": parts["first_load_rest"]["median_s"],
            "a second load in the same process": parts["second_load"]["median_s"],
        },
        "import_time_by_package": import_breakdown(SNIPPETS["load_pocket"]),
    }


def _print_commands(res: dict) -> None:
    for label in ("this", "reference"):
        if label not in res:
            continue
        for name, by_key in res[label].items():
            shown = ", ".join(f"{k} {v['median_s']:.2f} s" for k, v in by_key.items())
            prof = res.get("import_profile", {}).get(label, {}).get(name)
            mods = (
                f"; {prof['modules']} modules, heavy: {' '.join(prof['heavy_packages_imported']) or '-'}"
                if prof
                else ""
            )
            print(f"{label:>9} {name:<8} {shown}{mods}")
    for name, ratios in res.get("ratio_this_over_reference", {}).items():
        print(f"    ratio {name:<8} " + ", ".join(f"{k} {v:.2f}" for k, v in ratios.items()))
    for label, by_name in res.get("no_bytecode", {}).items():
        for name, run in by_name.items():
            print(f"no bytecode {label:>9} {name:<8} " + ", ".join(f"{k} {v:.2f} s" for k, v in run.items()))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--commands", nargs="*", choices=sorted(COMMANDS), default=["help", "layers", "segment"],
                        help="commands to time (none: skip)")  # fmt: skip
    parser.add_argument(
        "--reference",
        type=Path,
        default=None,
        metavar="DIR",
        help="another checkout of the repository to measure alternately (ratios this/reference)",
    )
    parser.add_argument(
        "--no-bytecode", action="store_true", help="also one run per command with no bytecode cache"
    )
    parser.add_argument("--no-profile", action="store_true", help="skip the -X importtime profiles")
    parser.add_argument(
        "--steps", action="store_true", help="also the step-by-step import and load measurements"
    )
    parser.add_argument(
        "--photo",
        type=Path,
        default=None,
        metavar="PATH",
        help="the image segment reads (default: generated)",
    )
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args(argv)
    load = list(os.getloadavg()) if hasattr(os, "getloadavg") else None
    doc: dict = {
        "benchmark": "load_time",
        "python": platform.python_version(),
        "cpu_count": os.cpu_count(),
        "load_average_at_start": load,
        "repeats": args.repeats,
        "reference": str(args.reference) if args.reference else None,
    }
    if args.commands:
        doc["commands"] = measure_commands(
            args.commands,
            args.repeats,
            args.reference,
            no_bytecode=args.no_bytecode,
            profile=not args.no_profile,
            photo=args.photo,
        )
        _print_commands(doc["commands"])
    if args.steps:
        doc["steps"] = measure_steps(args.repeats)
        for line, value in doc["steps"]["summary_median_s"].items():
            print(f"{line}: {value:.3f} s")
    doc["load_average_at_end"] = list(os.getloadavg()) if hasattr(os, "getloadavg") else None
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(doc, indent=2) + "\n")
    print(f"wrote {args.out} (load average {load} at start, {doc['load_average_at_end']} at end)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
