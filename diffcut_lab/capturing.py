"""One-pass feature capture with early exit: :func:`capture` and :func:`memory_estimate`.

:func:`capture` runs one UNet forward per timestep for all requested hook points
(:mod:`diffcut_lab.hook_points`), stops the forward right after the deepest requested module (a private
exception raised by a forward hook and caught around the call), and always removes its hooks and restores
the attention processors. Attention probabilities are materialised only when asked for, by a chunked
processor (:mod:`diffcut_lab._diffusers`).

What a hook keeps costs at most one copy of the output (:class:`_Keeper`): the transpose of ``(B, N, C)``
tokens to ``(B, C, h, w)`` and the conversion to the store dtype in one pass, no copy at all for a map
that already has the store dtype and layout; from a CUDA UNet to the CPU store that copy is asynchronous,
into pinned memory, overlapped with the rest of the forward. The NaN/Inf check is one ``aminmax`` pass,
read after the forward (one synchronisation per forward).
"""

from __future__ import annotations

import math
import numbers
import threading
import weakref
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any, NamedTuple

import torch

from . import _diffusers
from ._diffusers import ProbsProcessor as _ProbsProcessor
from .backbones import Backbone
from .config import DiffCutConfig
from .errors import FeatureError, ParameterError, UnknownLayerError
from .feature_cache import FeatureCache
from .hook_points import HookPoint, LayerSpec, diffcut_layer_name, list_hook_points, order_key, resolve_layers
from .validation import check_int

__all__ = ["capture", "capture_lock", "memory_estimate"]


#: the settings' defaults: capture's layer, timestep, seed, policy, antialias and noise device are theirs
_DEFAULTS = DiffCutConfig()


class _StopForward(Exception):
    """Raised by the hook of the deepest requested module to end the UNet forward early."""


_ACTIVE: weakref.WeakSet = weakref.WeakSet()  # UNets with a capture in progress (hooks are global state)
_ACTIVE_LOCK = threading.Lock()  # makes "check, then mark as active" one step across threads
_WAIT_LOCKS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()  # UNet -> lock, for capture_lock


def capture_lock(backbone: Backbone) -> threading.Lock:
    """A lock of the backbone's UNet for threads that share it (e.g. Dask's threads in one worker): hold
    it around :func:`capture` to wait for the other thread's capture, where :func:`capture` alone would
    refuse to run beside it (hooks are global state of the module)."""
    with _ACTIVE_LOCK:
        return _WAIT_LOCKS.setdefault(backbone.unet, threading.Lock())


def _output(output: Any) -> torch.Tensor:
    """The tensor of a module's output (``tuple``, ``Transformer2DModelOutput`` or a tensor)."""
    x = output[0] if isinstance(output, (tuple, list)) else getattr(output, "sample", output)
    return x.detach()


def _transfer(src: torch.device, dst: torch.device) -> str:
    """How a feature gets from the UNet's device to the store device: ``"none"`` (the same device),
    ``"pinned"`` (CUDA to the CPU: a ``non_blocking`` copy into pinned host memory on a side stream,
    overlapped with the rest of the forward) or ``"copy"`` (anything else: a plain, blocking copy)."""
    if src.type == dst.type and (dst.index is None or dst.index == src.index):
        return "none"
    if src.type == "cuda" and dst.type == "cpu":
        return "pinned"
    return "copy"


def _finite(x: torch.Tensor) -> torch.Tensor:
    """A 0-d bool tensor on ``x``'s device: no NaN and no Inf in ``x``.

    One read of ``x`` and no temporary: ``aminmax`` propagates NaN, and an Inf is the min or the max
    (``torch.isfinite(x).all()`` writes a bool tensor of ``x``'s size first, about ten times slower).
    """
    if x.numel() == 0:
        return torch.ones((), dtype=torch.bool, device=x.device)
    lo, hi = torch.aminmax(x)
    return torch.isfinite(lo) & torch.isfinite(hi)


class _Kept(NamedTuple):
    """What a hook kept of one output.

    ``value``: the feature, ``(B, C, h, w)`` (``probs``: ``(B, N, N)``) in the store dtype on the store
    device (for ``"pinned"``, filled once ``stream`` has finished); the raw output when its token count
    does not fit the resolution (``tokens_ok=False``, reported by :func:`_collect`). ``finite``: a 0-d bool
    tensor on the UNet's device, read after the forward so that a hook never synchronises a GPU.
    """

    value: torch.Tensor
    finite: torch.Tensor | None
    tokens_ok: bool = True
    stream: Any = None


class _Keeper:
    """Turns what a hook sees into the stored feature with at most one copy.

    - ``(B, N, C)`` tokens: one copy that transposes to ``(B, C, h, w)`` and converts to the store dtype
      in the same pass;
    - ``(B, C, h, w)`` maps and ``probs``: kept as they are, without a copy, when dtype and device already
      fit and the tensor is the module's own fresh output (see :func:`~diffcut_lab._diffusers.outputs_modified_in_place`); else
      one copy that converts;
    - a CUDA UNet with a CPU store: that copy (after the transpose/conversion on the GPU) goes into pinned
      host memory with ``non_blocking=True`` on a side stream, overlapped with the rest of the forward;
      :func:`_collect` waits for it once, after the forward;
    - the NaN/Inf check reads the smaller tensor: the output when the store dtype is wider (a widening
      conversion keeps finite values finite and non-finite ones non-finite), else the stored one.
    """

    def __init__(self, unet: Any, store_dtype: torch.dtype, store_device: Any) -> None:
        self.dtype = store_dtype
        self.itemsize = torch.finfo(store_dtype).bits // 8
        self.device = torch.device(store_device)
        self.copy_outputs = _diffusers.outputs_modified_in_place(unet)
        self.kept_storages: set[int] = set()  # outputs kept without a copy (never keep one twice)
        self.streams: dict[torch.device, Any] = {}

    def _store_device(self) -> torch.device:
        if self.device.type == "cuda" and self.device.index is None:  # "cuda": the current device
            return torch.device("cuda", torch.cuda.current_device())
        return self.device

    def _fresh(self, x: torch.Tensor) -> bool:
        """``x`` can be kept as it is: contiguous, the whole of its storage, and not kept already."""
        if self.copy_outputs or not x.is_contiguous():
            return False
        storage = x.untyped_storage()
        key = storage.data_ptr()
        if storage.nbytes() != x.numel() * x.element_size() or key in self.kept_storages:
            return False
        self.kept_storages.add(key)
        return True

    def keep(self, x: torch.Tensor, point: HookPoint, *, owned: bool = False) -> _Kept:
        """The stored form of output ``x`` of ``point`` (``owned``: a tensor made for us, e.g. ``probs``)."""
        src = x
        if x.ndim == 3 and point.kind != "probs":  # (B, N, C) tokens -> a (B, C, h, w) view
            b, n, c = x.shape
            h, w = point.resolution
            if n != h * w:
                return _Kept(x, None, tokens_ok=False)
            src = x.transpose(1, 2).reshape(b, c, h, w)
        dst = self._store_device()
        mode = _transfer(x.device, dst)
        as_is = src is x and x.dtype == self.dtype and (owned or self._fresh(x))
        # the hook runs inside the forward's inference mode; what it allocates is made outside it, so that
        # copied features are ordinary tensors (changeable in place), as when they were copied after it
        with torch.inference_mode(False):
            if mode == "copy":  # rare (e.g. a CPU UNet with a CUDA store): one blocking copy
                value = torch.empty(src.shape, dtype=self.dtype, device=dst).copy_(src)
                return _Kept(value, _finite(value))
            dense = x if as_is else torch.empty(src.shape, dtype=self.dtype, device=x.device).copy_(src)
            finite = _finite(x if x.element_size() < self.itemsize else dense)
            if mode == "none":
                return _Kept(dense, finite)
            host = torch.empty(dense.shape, dtype=self.dtype, pin_memory=True)
            stream = self.streams.get(x.device)
            if stream is None:
                stream = self.streams[x.device] = torch.cuda.Stream(device=x.device)
            stream.wait_stream(torch.cuda.current_stream(x.device))
            with torch.cuda.stream(stream):
                host.copy_(dense, non_blocking=True)
            dense.record_stream(stream)  # its memory is not reused before the copy has run
            return _Kept(host, finite, stream=stream)


def _forward_once(
    backbone: Backbone,
    x_t: torch.Tensor,
    t: int,
    *,
    embeds: torch.Tensor | None,
    added: dict[str, torch.Tensor] | None,
    store: dict[str, _Kept],
) -> None:
    """One UNet forward inside :func:`_hooks`; the early-exit exception ends it quietly."""
    store.clear()
    try:
        backbone.forward(x_t, t, prompt_embeds=embeds, added_cond_kwargs=added)
    except _StopForward:
        pass


def _collect(store: dict[str, _Kept], points: Sequence[HookPoint], t: int) -> dict[str, torch.Tensor]:
    """The checked feature maps of one forward, from what the hooks kept (on the store device already).

    Waits once for the device-to-host copies still running and reads the NaN/Inf flags in one transfer
    per device.
    """
    kept = [store[p.name] for p in points if p.name in store]
    for stream in {id(k.stream): k.stream for k in kept if k.stream is not None}.values():
        stream.synchronize()
    by_device: dict[torch.device, list[_Kept]] = {}
    for k in kept:
        if k.finite is not None:
            by_device.setdefault(k.finite.device, []).append(k)
    ok = {}
    for group in by_device.values():
        ok.update(zip(map(id, group), torch.stack([k.finite for k in group]).tolist()))
    out = {}
    for p in points:
        if p.name not in store:
            raise FeatureError(f"layer {p.name!r} did not run in the UNet forward at t={t}.")
        k = store.pop(p.name)
        if not k.tokens_ok:
            n = k.value.shape[1]
            h, w = p.resolution
            raise FeatureError(
                f"layer {p.name!r} at t={t} returned {n} tokens, expected {h}x{w}={h * w} for this input "
                "size; the input size may not fit the UNet (use a multiple of backbone.size_multiple)."
            )
        if not ok[id(k)]:
            what = "probabilities" if p.kind == "probs" else "values"
            raise FeatureError(
                f"layer {p.name!r} at t={t} produced NaN or Inf {what}; with float16 this is usually an "
                "overflow: load the backbone with dtype=torch.float32 (or torch.bfloat16) and try again."
            )
        out[p.name] = k.value
    return out


@contextmanager
def _hooks(
    backbone: Backbone,
    points: Sequence[HookPoint],
    *,
    store: dict[str, _Kept],
    store_dtype: torch.dtype,
    early_exit: bool,
    store_device: Any = "cpu",
) -> Iterator[None]:
    """Install capture hooks (and probability processors); always remove/restore them."""
    unet = backbone.unet
    with _ACTIVE_LOCK:
        if unet in _ACTIVE:
            raise ParameterError(
                "a capture is already running on this backbone (hooks are global state); finish it first."
            )
        _ACTIVE.add(unet)
    handles: list[Any] = []
    swapped: list[tuple[Any, Any]] = []
    try:
        keeper = _Keeper(unet, store_dtype, store_device)
        for p in points:
            module = unet.get_submodule(p.module_name)
            if p.kind == "probs":

                def sink(probs: torch.Tensor, p: HookPoint = p) -> None:
                    store[p.name] = keeper.keep(probs, p, owned=True)

                swapped.append((module, module.processor))
                module.set_processor(_ProbsProcessor(module.processor, sink, store_dtype))
            else:

                def hook(_mod: Any, _inp: Any, out: Any, p: HookPoint = p) -> None:
                    store[p.name] = keeper.keep(_output(out), p)

                handles.append(module.register_forward_hook(hook))
        if early_exit and points:
            deepest = max(points, key=lambda p: order_key(p.name))

            def stop(_mod: Any, _inp: Any, _out: Any) -> None:
                raise _StopForward

            handles.append(unet.get_submodule(deepest.module_name).register_forward_hook(stop))
        yield
    finally:
        for h in handles:
            h.remove()
        for module, processor in swapped:
            module.set_processor(processor)
        with _ACTIVE_LOCK:
            _ACTIVE.discard(unet)


def _timesteps(timesteps: int | Sequence[int]) -> list[int]:
    items = [timesteps] if isinstance(timesteps, (numbers.Integral, torch.Tensor)) else list(timesteps)
    out: list[int] = []
    for t in items:
        t = check_int(int(t.item()) if isinstance(t, torch.Tensor) else t, "each timestep")
        if t not in out:
            out.append(t)
    if not out:
        raise ParameterError("no timesteps given; the paper uses timesteps=50.")
    return out


def _store_dtype(dtype: torch.dtype | str) -> torch.dtype:
    from .backbones import parse_dtype

    if dtype is None:
        raise ParameterError("store_dtype must be a floating torch dtype or its name; got None.")
    return parse_dtype(dtype, "store dtype")


def capture(
    backbone: Backbone,
    images: Any,
    layers: LayerSpec = _DEFAULTS.layer,
    timesteps: int | Sequence[int] = _DEFAULTS.timestep,
    *,
    seed: int = _DEFAULTS.seed,
    prompt: str = "",
    image_size: int | tuple[int, int] | None = None,
    store_dtype: torch.dtype | str = torch.float32,
    batch_size: int | None = None,
    progress: bool = False,
    policy: str = _DEFAULTS.policy,
    store_device: torch.device | str = "cpu",
    early_exit: bool = True,
    antialias: bool = _DEFAULTS.antialias,
    noise_device: str = _DEFAULTS.noise_device,
) -> FeatureCache:
    """Capture UNet activations: one forward per timestep serves every requested layer.

    Images are resized to ``image_size`` (default: the backbone's native size), encoded (VAE mean x
    scaling factor, or ``2 x - 1`` in pixel space), noised to each timestep with one seeded noise map
    shared by the batch, and passed through the UNet with the ``prompt`` conditioning. The forward
    stops right after the deepest requested module (no decoder work for encoder layers). ``layers``,
    ``timesteps``, ``seed``, ``policy``, ``antialias`` and ``noise_device`` default to the
    :class:`~diffcut_lab.config.DiffCutConfig` defaults of ``layer``, ``timestep``, ``seed``, ...

    Parameters
    ----------
    backbone : Backbone
    images : image, list of images, or (B, 3, H, W) tensor in [0, 1]
        Anything :func:`diffcut_lab.images.to_batch` accepts.
    layers : str, list of str or callable
        See :func:`resolve_layers` (``"diffcut"``: the paper's layer).
    timesteps : int or sequence of int
        Noise levels in ``[0, num_train_timesteps)``; the paper uses 50.
    seed : int
        Seed of the noise (the same noise map for every image and timestep).
    prompt : str
        Conditioning prompt; ``""`` (the paper's) uses the embeddings stored in the backbone.
    image_size : int or (H, W), optional
        Input size in pixels, a multiple of ``backbone.size_multiple``.
    store_dtype : torch.dtype or str
        dtype the features are stored in (``torch.float16`` halves memory).
    batch_size : int, optional
        Images per UNet forward (default: all at once).
    progress : bool
        Show a progress bar.
    policy : {"resize", "center_crop"}
        How images are brought to ``image_size``.
    store_device : torch.device or str
        Where captured features are kept (the CPU by default; pass the backbone's device to keep them on
        the GPU, which avoids a device-to-host copy per layer). From a CUDA UNet to the CPU, each feature
        is copied asynchronously into pinned host memory while the forward goes on (the tensors returned
        are pinned), and the copies are waited for once per forward.
    early_exit : bool
        Stop the forward after the deepest requested module (default). ``False`` runs the whole UNet.
    antialias : bool
        Antialias the resize to ``image_size`` (the published code does not).
    noise_device : {"cpu", "model"}
        Where the seeded noise is drawn: the CPU (the same features on every device) or the model's
        device (as published).

    Returns
    -------
    FeatureCache
        ``cache[layer, t]`` -> ``(B, C, h, w)`` (``probs``: ``(B, N, N)``).

    Raises
    ------
    UnknownLayerError, ParameterError, ImageInputError, FeatureError
    """
    from .images import to_batch

    size = backbone.check_image_size(backbone.image_size if image_size is None else image_size)
    sdt = _store_dtype(store_dtype)
    ts = _timesteps(timesteps)
    for t in ts:
        backbone.check_timestep(t)
    points = _points(backbone, layers, size)
    names = [p.name for p in points]
    batch = to_batch(images, size, policy=policy, antialias=antialias)
    if batch_size is not None:
        batch_size = check_int(
            batch_size, "batch_size", minimum=1, hint="Pass None for one forward of all images."
        )
    step = batch.shape[0] if batch_size is None else batch_size
    feats = _passes(
        backbone, batch, points, ts, step=step, conditioning=backbone.conditioning(prompt), seed=seed,
        noise_device=noise_device, progress=progress,
        hooks={"store_dtype": sdt, "early_exit": early_exit, "store_device": store_device},
    )  # fmt: skip
    aliases = {}
    try:
        aliases["diffcut"] = diffcut_layer_name(backbone)
    except UnknownLayerError:
        pass
    meta = {
        "model": backbone.name,
        "family": backbone.family,
        "layers": names,
        "timesteps": ts,
        "seed": seed,
        "image_size": list(size),
        "prompt": prompt,
        "store_dtype": str(sdt).replace("torch.", ""),
        "unet_dtype": str(backbone.dtype).replace("torch.", ""),
        "latent_scale": backbone.latent_scale,
        "policy": policy,
        "antialias": antialias,
        "noise_device": noise_device,
        "kinds": {p.name: p.kind for p in points},
        "resolutions": {p.name: list(p.resolution) for p in points},
    }
    return FeatureCache(feats, layers=names, timesteps=ts, meta=meta, images=batch, aliases=aliases)


def _points(backbone: Backbone, layers: LayerSpec, size: Any) -> list[HookPoint]:
    """The hook points ``layers`` resolves to, at input size ``size``, in the order resolved."""
    names = resolve_layers(backbone, layers)
    by_name = {p.name: p for p in list_hook_points(backbone, image_size=size)}
    return [by_name[n] for n in names]


def _passes(
    backbone: Backbone,
    batch: torch.Tensor,
    points: Sequence[HookPoint],
    ts: Sequence[int],
    *,
    step: int,
    conditioning: tuple[torch.Tensor, dict[str, torch.Tensor] | None],
    seed: int,
    noise_device: str,
    progress: bool,
    hooks: dict[str, Any],
) -> dict[tuple[str, int], torch.Tensor]:
    """The features ``(layer, t) -> (B, C, h, w)`` of ``batch``: one forward per chunk of ``step`` images
    and timestep, inside :func:`_hooks` (``hooks``: its keyword arguments)."""
    from tqdm.auto import tqdm

    embeds, added = conditioning
    chunks: dict[tuple[str, int], list[torch.Tensor]] = {(p.name, t): [] for p in points for t in ts}
    store: dict[str, _Kept] = {}
    n_chunks = math.ceil(batch.shape[0] / step)
    bar = tqdm(total=n_chunks * len(ts), disable=not progress, desc="capture", unit="pass")
    try:
        with _hooks(backbone, points, store=store, **hooks):
            for start in range(0, batch.shape[0], step):
                latents = backbone.encode(batch[start : start + step])
                for t in ts:
                    x_t = backbone.add_noise(latents, t, seed=seed, noise_device=noise_device)
                    _forward_once(backbone, x_t, t, embeds=embeds, added=added, store=store)
                    for n, feat in _collect(store, points, t).items():
                        chunks[(n, t)].append(feat)
                    bar.update(1)
    finally:
        bar.close()
    return {k: torch.cat(v) if len(v) > 1 else v[0] for k, v in chunks.items()}


def memory_estimate(
    backbone: Backbone,
    layers: LayerSpec,
    timesteps: int | Sequence[int],
    batch: int,
    image_size: int | tuple[int, int] | None = None,
    *,
    store_dtype: torch.dtype | str = torch.float32,
) -> int:
    """Bytes the features of a :func:`capture` call will hold (the images not counted).

    Parameters
    ----------
    backbone : Backbone
    layers : layer spec
        As for :func:`resolve_layers`.
    timesteps : int or sequence of int
    batch : int
        Number of images.
    image_size : int or (H, W), optional
        Default: the backbone's native size.
    store_dtype : torch.dtype or str

    Returns
    -------
    int
        ``sum over layers of B x C x h x w`` (``B x N x N`` for ``probs``) x timesteps x bytes per value.
    """
    size = backbone.image_size if image_size is None else image_size
    itemsize = torch.empty((), dtype=_store_dtype(store_dtype)).element_size()
    per_image = 0
    for p in _points(backbone, layers, size):
        per_image += p.tokens * p.tokens if p.kind == "probs" else p.channels * p.tokens
    return int(per_image * len(_timesteps(timesteps)) * int(batch) * itemsize)
