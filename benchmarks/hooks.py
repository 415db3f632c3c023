"""Benchmark: hook overhead and early exit of :func:`diffcut_lab.hooks.capture`, same run, ratios only.

Two UNets with random weights, built directly in the chosen dtype from the public configs (the same
dicts the tests use): SD 1.5-sized at 512 px (latent 64) and SSD-1B-sized at 1024 px (latent 128),
batch 1, empty-prompt-shaped random conditioning. For each model, four variants run interleaved in
every repeat (the order reversed every other repeat), on the same ``x_t``:

- ``full``: a plain UNet forward, no hooks -- the reference;
- ``all_attn1``: the same forward with capture hooks on every ``attn1``, no early exit, features
  collected as ``capture`` collects them (store dtype, store device, ``(B, C, h, w)``, NaN check);
- ``all_kinds``: the same with every hook point of every kind (``layers="all"``: ``attn1``, ``attn2``,
  ``block``, ``attentions``, ``resnet``); ``probs`` is left out, as ``"all"`` leaves it out: it swaps
  the attention processor for one that materialises O(N^2) probabilities, a different computation
  rather than a hook;
- ``diffcut``: capture of the ``"diffcut"`` layer only, with early exit -- the work actually done.

The hooks are installed by the same private context manager ``capture`` uses; VAE encoding and noising
are left out (identical for all variants and not what is measured). Each ratio is the median over
repeats of (variant / ``full`` of the same repeat); the machine may be shared, so the ratios (same run,
interleaved) are the result, not the seconds. Also recorded: the ratio of the fastest runs (the least
disturbed by other processes), the ratio of process CPU times, and the hook work alone: the hooks that
``_hooks`` installs called on outputs recorded from a plain forward, then the features collected (the
fastest of ``--replays`` runs), as a fraction of the fastest plain forward -- on a shared machine the most
stable of these measures.

``--baseline FILE`` measures another version of ``diffcut_lab/capturing.py`` (e.g. the previous commit's,
``git show HEAD~1:diffcut_lab/capturing.py > /tmp/before.py``) interleaved in the same repeats, and checks
that both store identical features (values, dtype, device) for every hook point. Goals: ``all_attn1`` and ``all_kinds`` at most 1.03x the
plain forward, early exit at most 0.55x on SSD-1B.

Run: ``python benchmarks/hooks.py [--repeats 3] [--threads 2] [--dtype bfloat16] [--device cpu]
[--store-dtype float32] [--store-device cpu]`` -> ``benchmarks/results/hooks.json``
(``--device cuda --dtype float16`` runs were saved as ``benchmarks/results/hooks_cuda.json``).
"""

from __future__ import annotations

import argparse
import hashlib
import importlib.util
import inspect
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path
from types import ModuleType
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from test_foundation_fullsize import SD15, SSD_1B

from diffcut_lab import capturing, hooks
from diffcut_lab.backbones import Backbone, sdxl_added_cond

OUT = Path(__file__).parent / "results" / "hooks.json"
MODELS = {"sd15-512": (SD15, 512), "ssd1b-1024": (SSD_1B, 1024)}
GOALS = {"hook_overhead_ratio": 1.03, "all_kinds_overhead_ratio": 1.03, "early_exit_ratio_ssd1b": 0.55}


def build(cfg: dict, image_size: int, dtype: torch.dtype, device: str, seed: int = 0) -> Backbone:
    """A random-weight backbone of the given config, built directly in ``dtype``."""
    from diffusers import UNet2DConditionModel

    torch.manual_seed(seed)
    previous = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        unet = UNet2DConditionModel(**{k: v for k, v in cfg.items() if not k.startswith("_")})
    finally:
        torch.set_default_dtype(previous)
    unet.eval().requires_grad_(False).to(device)
    cross = cfg["cross_attention_dim"]
    added = None
    if cfg.get("addition_embed_type") == "text_time":
        added = sdxl_added_cond(torch.randn(1, 1280), image_size)
    return Backbone(
        unet,
        prompt_embeds=torch.randn(1, 77, cross),
        added_cond_kwargs=added,
        name="random",
        image_size=image_size,
        latent_scale=8,
    )


def sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def load_impl(path: Path | None) -> ModuleType:
    """The capture internals to measure: ``diffcut_lab.capturing``, or a ``capturing.py`` of another
    version loaded from ``path`` (e.g. ``git show HEAD~1:diffcut_lab/capturing.py > /tmp/before.py``)."""
    if path is None:
        return capturing
    spec = importlib.util.spec_from_file_location(f"diffcut_lab._bench_{path.stem}", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def git_blob(path: Path | None) -> str | None:
    """The git blob id of a file (as ``git hash-object`` prints it; ``git log --find-object=ID`` finds the
    commits that have it), so that a result names the exact version it measured."""
    if path is None:
        path = Path(capturing.__file__)
    data = path.read_bytes()
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


def hooked_forward(
    impl: ModuleType,
    bb: Backbone,
    x_t: torch.Tensor,
    points: list,
    early_exit: bool,
    store_device: str,
    store_dtype: torch.dtype,
) -> dict[str, torch.Tensor]:
    """One forward as ``capture`` runs it (hooks, forward, features collected), with ``impl``'s internals.
    Older versions took ``store_device`` in ``_collect`` instead of ``_hooks``: both are called right."""
    store: dict = {}
    embeds, added = bb.conditioning("")
    late = "store_device" not in inspect.signature(impl._hooks).parameters
    kw = {} if late else {"store_device": store_device}
    with impl._hooks(bb, points, store=store, store_dtype=store_dtype, early_exit=early_exit, **kw):
        impl._forward_once(bb, x_t, 50, embeds=embeds, added=added, store=store)
    feats = impl._collect(store, points, 50, store_device) if late else impl._collect(store, points, 50)
    assert len(feats) == len(points)
    return feats


def raw_outputs(bb: Backbone, x_t: torch.Tensor, points: list) -> dict[str, Any]:
    """What each module returns in one plain forward (references: the UNet never writes into them)."""
    raw: dict[str, Any] = {}
    handles = [
        bb.unet.get_submodule(p.module_name).register_forward_hook(
            lambda _m, _i, out, n=p.name: raw.__setitem__(n, out)
        )
        for p in points
    ]
    try:
        bb.forward(x_t, 50)
    finally:
        for h in handles:
            h.remove()
    return raw


def replay_hook_work(
    impl: ModuleType,
    bb: Backbone,
    raw: dict[str, Any],
    points: list,
    store_device: str,
    store_dtype: torch.dtype,
    device: str,
) -> float:
    """Seconds of the work ``impl``'s hooks and collection add to one forward, measured apart from the
    forward: the hooks ``_hooks`` installs are called on recorded outputs, then the features collected.
    Far less disturbed by other processes than the difference of two forwards."""
    store: dict = {}
    late = "store_device" not in inspect.signature(impl._hooks).parameters
    kw = {} if late else {"store_device": store_device}
    with impl._hooks(bb, points, store=store, store_dtype=store_dtype, early_exit=False, **kw):
        modules = [bb.unet.get_submodule(p.module_name) for p in points]
        with torch.inference_mode():
            sync(device)
            t0 = time.perf_counter()
            for p, m in zip(points, modules):
                for hook in m._forward_hooks.values():
                    hook(m, (), raw[p.name])
            feats = (
                impl._collect(store, points, 50, store_device) if late else impl._collect(store, points, 50)
            )
            sync(device)
            elapsed = time.perf_counter() - t0
    assert len(feats) == len(points)
    return elapsed


def run_variant(bb: Backbone, x_t: torch.Tensor, device: str, hooked: Any = None) -> tuple[float, float]:
    """(wall, process CPU) seconds for one forward: plain, or ``hooked()``."""
    sync(device)
    t0, c0 = time.perf_counter(), time.process_time()
    if hooked is None:
        bb.forward(x_t, 50)
    else:
        hooked()
    sync(device)
    return time.perf_counter() - t0, time.process_time() - c0


def bench_model(
    key: str,
    repeats: int,
    dtype: torch.dtype,
    device: str,
    store_device: str,
    store_dtype: torch.dtype,
    impl: ModuleType,
    baseline: ModuleType | None,
    replays: int = 15,
) -> dict:
    cfg, size = MODELS[key]
    t0 = time.perf_counter()
    bb = build(cfg, size, dtype, device)
    build_s = time.perf_counter() - t0
    latent = size // 8
    x_t = torch.randn(1, 4, latent, latent, generator=torch.Generator().manual_seed(0)).to(device, dtype)
    by_name = {p.name: p for p in hooks.list_hook_points(bb)}
    layers = {
        "all_attn1": ([by_name[n] for n in hooks.resolve_layers(bb, "attn1")], False),
        "all_kinds": ([by_name[n] for n in hooks.resolve_layers(bb, "all")], False),
        "diffcut": ([by_name[n] for n in hooks.resolve_layers(bb, "diffcut")], True),
    }
    impls = {"": impl} if baseline is None else {"": impl, "@baseline": baseline}
    variants: dict[str, Any] = {"full": None}
    for suffix, mod in impls.items():
        for name, (pts, early) in layers.items():
            if suffix and name == "diffcut":
                continue  # early exit is not what a baseline is compared on

            def call(mod: ModuleType = mod, pts: list = pts, early: bool = early) -> None:
                hooked_forward(mod, bb, x_t, pts, early, store_device, store_dtype)

            variants[name + suffix] = call

    # warm-up (first allocations), and the check that both implementations store the same features
    run_variant(bb, x_t, device)
    pts = layers["all_kinds"][0]
    feats = hooked_forward(impl, bb, x_t, pts, False, store_device, store_dtype)
    identical = None
    if baseline is not None:
        ref = hooked_forward(baseline, bb, x_t, pts, False, store_device, store_dtype)
        identical = all(
            feats[k].dtype == ref[k].dtype
            and feats[k].device == ref[k].device
            and torch.equal(feats[k], ref[k])
            for k in ref
        )
        del ref
    contiguous = all(f.is_contiguous() for f in feats.values())
    del feats
    times: dict[str, list[float]] = {k: [] for k in variants}
    cpu: dict[str, list[float]] = {k: [] for k in variants}
    for r in range(repeats):
        order = list(variants) if r % 2 == 0 else list(reversed(variants))  # interleave, alternate order
        for name in order:
            wall, used = run_variant(bb, x_t, device, variants[name])
            times[name].append(wall)
            cpu[name].append(used)
    med = {k: statistics.median(v) for k, v in times.items()}
    # the hook work alone, replayed on recorded outputs (fastest of several runs)
    replay: dict[str, float] = {}
    for name in ("all_attn1", "all_kinds"):
        pts = layers[name][0]
        raw = raw_outputs(bb, x_t, pts)
        for _ in range(replays):  # interleaved too; the fastest run is the least disturbed one
            for suffix, mod in impls.items():
                seconds = replay_hook_work(mod, bb, raw, pts, store_device, store_dtype, device)
                replay[name + suffix] = min(seconds, replay.get(name + suffix, seconds))
        del raw
    fastest_full = min(times["full"])

    def ratio(name: str, t: dict[str, list[float]] = times) -> float:
        """Median over repeats of the ratio to the plain forward of the same repeat."""
        return statistics.median(a / f for a, f in zip(t[name], t["full"]))

    hooked = [k for k in variants if k != "full"]
    ratios = {k: ratio(k) for k in hooked}
    # under load from other processes (shared machine) the fastest repeat is the least disturbed one
    min_ratios = {k: min(times[k]) / min(times["full"]) for k in hooked}
    cpu_ratios = {k: ratio(k, cpu) for k in hooked}
    stored = {
        k: sum(p.channels * p.tokens for p in pts) * torch.empty((), dtype=store_dtype).element_size()
        for k, (pts, _) in layers.items()
    }
    result = {
        "model": key,
        "image_size": size,
        "latent": latent,
        "diffcut_layer": layers["diffcut"][0][0].name,
        "attn1_hooked": len(layers["all_attn1"][0]),
        "all_kinds_hooked": len(layers["all_kinds"][0]),
        "features_contiguous": contiguous,
        "features_identical_to_baseline": identical,
        "stored_mb": {k: round(v / 2**20, 1) for k, v in stored.items()},
        "build_s": round(build_s, 2),
        "median_s": {k: round(v, 4) for k, v in med.items()},
        "times_s": {k: [round(t, 4) for t in v] for k, v in times.items()},
        "cpu_s": {k: [round(t, 4) for t in v] for k, v in cpu.items()},
        "ratio_of_fastest": {k: round(v, 4) for k, v in min_ratios.items()},
        "cpu_time_ratio": {k: round(v, 4) for k, v in cpu_ratios.items()},
        "hook_overhead_ratio": round(ratios["all_attn1"], 4),
        "all_kinds_overhead_ratio": round(ratios["all_kinds"], 4),
        "early_exit_ratio": round(ratios["diffcut"], 4),
        "ratios": {k: round(v, 4) for k, v in ratios.items()},
        "hook_work_s": {k: round(v, 4) for k, v in replay.items()},
        "hook_work_over_fastest_forward": {k: round(v / fastest_full, 4) for k, v in replay.items()},
    }
    print(
        f"{key}: full {med['full']:.2f} s | "
        + " | ".join(f"{k} {med[k]:.2f} s x{ratios[k]:.3f} (fastest x{min_ratios[k]:.3f})" for k in hooked)
        + ("" if identical is None else f" | features identical to the baseline's: {identical}")
        + "\n  hook work replayed apart from the forward: "
        + ", ".join(
            f"{k} {v:.3f} s (+{100 * v / fastest_full:.1f}% of the fastest forward)"
            for k, v in replay.items()
        ),
        flush=True,
    )
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--dtype", default="bfloat16", choices=["bfloat16", "float32", "float16"])
    parser.add_argument("--device", default="cpu")
    parser.add_argument(
        "--store-device", default="cpu", help="where captured features go (capture's default: cpu)"
    )
    parser.add_argument(
        "--store-dtype",
        default="float32",
        choices=["bfloat16", "float32", "float16"],
        help="dtype captured features are kept in (capture's default: float32)",
    )
    parser.add_argument("--models", nargs="+", default=list(MODELS), choices=list(MODELS))
    parser.add_argument("--replays", type=int, default=15, help="runs of the hook work replayed apart")
    parser.add_argument(
        "--impl",
        type=Path,
        default=None,
        help="measure the capture internals of this capturing.py instead of the installed one",
    )
    parser.add_argument(
        "--baseline",
        type=Path,
        default=None,
        help="also measure this capturing.py (e.g. the previous version), interleaved in the same repeats, "
        "and check that it stores the same features",
    )
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args(argv)
    load_at_start = list(os.getloadavg()) if hasattr(os, "getloadavg") else None
    torch.set_num_threads(args.threads)
    dtype = getattr(torch, args.dtype)
    store_dtype = getattr(torch, args.store_dtype)
    impl, baseline = load_impl(args.impl), (load_impl(args.baseline) if args.baseline else None)
    results = [
        bench_model(
            k, args.repeats, dtype, args.device, args.store_device, store_dtype, impl, baseline, args.replays
        )
        for k in args.models
    ]
    device_name = torch.cuda.get_device_name(0) if args.device.startswith("cuda") else "cpu"
    met = {
        "hook_overhead_ratio": all(r["hook_overhead_ratio"] <= GOALS["hook_overhead_ratio"] for r in results),
        "all_kinds_overhead_ratio": all(
            r["all_kinds_overhead_ratio"] <= GOALS["all_kinds_overhead_ratio"] for r in results
        ),
        "early_exit_ratio_ssd1b": all(
            r["early_exit_ratio"] <= GOALS["early_exit_ratio_ssd1b"]
            for r in results
            if r["model"] == "ssd1b-1024"
        ),
    }
    doc = {
        "benchmark": "hooks",
        "device": args.device,
        "device_name": device_name,
        "dtype": args.dtype,
        "threads": args.threads,
        "store_device": args.store_device,
        "store_dtype": args.store_dtype,
        "repeats": args.repeats,
        "replays": args.replays,
        "impl": str(args.impl) if args.impl else "diffcut_lab.capturing",
        "impl_git_blob": git_blob(args.impl),
        "baseline": str(args.baseline) if args.baseline else None,
        "baseline_git_blob": git_blob(args.baseline) if args.baseline else None,
        "torch": torch.__version__,
        "python": platform.python_version(),
        "cpu_count": os.cpu_count(),
        "load_average_at_start": load_at_start,
        "goals": {k: f"<= {v}" for k, v in GOALS.items()},
        "goals_met": met,
        "results": results,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(doc, indent=2))
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
