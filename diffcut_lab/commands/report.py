"""``diffcut-lab report``: segment images and write a self-contained HTML report.

The report is the notebook ``diffcut_lab/notebooks/05_report.ipynb`` (package data, so an installed
package finds it too), executed with papermill. Parameters are checked before anything runs; the outputs
are written to a temporary directory beside the target and moved into place only when everything worked:

* ``OUT.html``: the report (plotly.js embedded, widget state cleared, code hidden), viewable offline;
* ``OUT.ipynb``: the executed notebook, beside it;
* ``OUT_figures/*.png``: every figure as a PNG (kaleido with a Chromium; skipped with a warning when no
  browser can be started).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
import warnings
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..config import DiffCutConfig
from ..datasets.samples import SAMPLE_NAMES
from ..errors import DiffCutLabError, ImageInputError, ParameterError
from ..progress import PROGRESS_ENV, Progress, watch
from ._options import add_config_options, add_model_option, config_from_args

__all__ = ["ReportParams", "build_report", "register", "report_notebook_path", "run", "validate"]

REPORT_NOTEBOOK = "05_report.ipynb"
PLOTLY_MIME = "application/vnd.plotly.v1+json"
WIDGET_MIME = "application/vnd.jupyter.widget-view+json"


@dataclass(frozen=True)
class ReportParams:
    """The report notebook's papermill parameters (``to_dict()`` is exactly what papermill receives).

    ``images`` are absolute paths (an empty tuple means the bundled sample images); ``config`` is the one
    settings object, passed as ``config.to_dict()`` and rebuilt in the notebook by
    ``DiffCutConfig.from_dict``.
    """

    model: str = "pocket"
    images: tuple[str, ...] = field(default_factory=tuple)
    config: DiffCutConfig = field(default_factory=DiffCutConfig)

    def to_dict(self) -> dict[str, Any]:
        return {"model": self.model, "images": list(self.images), "config": self.config.to_dict()}


def report_notebook_path() -> Path:
    """Path of the report notebook shipped inside the package."""
    from importlib.resources import files

    path = Path(str(files("diffcut_lab").joinpath("notebooks", REPORT_NOTEBOOK)))
    if not path.is_file():
        raise DiffCutLabError(
            f"the report notebook is missing from the installed package (looked for {path}); reinstall "
            "diffcut-lab (it ships as package data: diffcut_lab/notebooks/05_report.ipynb)."
        )
    return path


def validate(params: ReportParams, *, check_model: bool = True) -> ReportParams:
    """Check what the notebook will need before it runs; raise a clear error on the first problem.

    The settings were validated when ``params.config`` was made; here every image must exist and be
    readable and (``check_model``) the model's configs must be readable, with the layer, the timestep and
    the input size valid for it (no weights are loaded: :func:`diffcut_lab.load_backbone` with
    ``weights=False``).
    """
    if not isinstance(params.config, DiffCutConfig):
        raise ParameterError(f"config must be a DiffCutConfig; got {type(params.config).__name__}.")
    from ..images import load_image

    for path in params.images:
        p = Path(path)
        if not p.is_file():
            raise ImageInputError(f"image {path} does not exist; pass existing image files to --images.")
        try:
            load_image(p)
        except ImageInputError:
            raise
        except Exception as exc:  # PIL raises many kinds of errors for unreadable files
            raise ImageInputError(f"image {path} cannot be read ({exc}); pass PNG, JPEG or another "
                                  "format Pillow reads.") from exc
    if check_model:
        from ..backbones import load_backbone
        from ..pipeline import DiffCut

        DiffCut(load_backbone(params.model, weights=False), params.config).check()
    return params


def _strip_for_html(nb: Any) -> Any:
    """Drop widget views (they need a kernel) from the outputs."""
    for cell in nb.cells:
        for out in cell.get("outputs", []):
            data = out.get("data")
            if data and WIDGET_MIME in data:
                del data[WIDGET_MIME]
                if not data:
                    data["text/plain"] = ""
    return nb


def export_html(nb: Any, path: Path, *, title: str) -> None:
    """Write ``nb`` as self-contained HTML: code hidden, widget state cleared, plotly embedded."""
    import nbformat
    from nbconvert import HTMLExporter
    from nbconvert.preprocessors import ClearMetadataPreprocessor

    nb = nbformat.from_dict(json.loads(json.dumps(nb)))
    clear = ClearMetadataPreprocessor(
        enabled=True, preserve_nb_metadata_mask={"kernelspec", "language_info"}
    )
    nb, _ = clear.preprocess(nb, {})
    nb.metadata.pop("widgets", None)
    nb = _strip_for_html(nb)
    exporter = HTMLExporter(exclude_input=True, exclude_input_prompt=True, exclude_output_prompt=True)
    body, _ = exporter.from_notebook_node(nb, resources={"metadata": {"name": title}})
    path.write_text(body, encoding="utf-8")


def plotly_figures(nb: Any) -> list[dict]:
    """The plotly figures (JSON dicts) displayed by the notebook, in order."""
    figs = []
    for cell in nb.cells:
        for out in cell.get("outputs", []):
            fig = (out.get("data") or {}).get(PLOTLY_MIME)
            if fig is not None:
                figs.append(fig)
    return figs


def export_pngs(figs: Sequence[dict], directory: Path, *, scale: float = 1.0) -> list[Path]:
    """Render figures to PNG with kaleido; returns the written paths ([] with a warning when kaleido
    cannot start a browser)."""
    import plotly.io as pio

    if not figs:
        return []
    directory.mkdir(parents=True, exist_ok=True)
    objs = [pio.from_json(json.dumps(f), skip_invalid=True) for f in figs]
    paths = [directory / f"figure-{i:02d}.png" for i in range(1, len(objs) + 1)]
    for fig in objs:
        fig.layout.sliders = None  # a static picture of the first frame
        fig.layout.updatemenus = None
    try:
        # kaleido's default size (700 x 500) squeezes multi-panel figures: use the figures' own
        pio.write_images(objs, paths, format="png", scale=scale,
                         width=[f.layout.width or 1100 for f in objs],
                         height=[f.layout.height or 500 for f in objs])
    except Exception as exc:
        reason = " ".join(f"{type(exc).__name__}: {exc}".split())
        reason = reason if len(reason) <= 120 else reason[:117] + "..."
        warnings.warn(
            "PNG export needs a Chromium for kaleido (Debian: apt-get install chromium; or "
            f"plotly_get_chrome); the HTML report is complete without them ({reason})",
            RuntimeWarning,
            stacklevel=2,
        )
        shutil.rmtree(directory, ignore_errors=True)
        return []
    return paths


@contextmanager
def _environ(name: str, value: str) -> Iterator[None]:
    """Set an environment variable (inherited by the notebook's kernel) for the block."""
    previous = os.environ.get(name)
    os.environ[name] = value
    try:
        yield
    finally:
        if previous is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = previous


def _kernel_options() -> dict[str, Any]:
    """Run the kernel over local IPC sockets where the platform has them: nothing listens on the network
    (and the kernel does not warn about plain-text TCP)."""
    if os.name != "posix":
        return {}
    from jupyter_client.manager import AsyncKernelManager
    from traitlets import CaselessStrEnum

    class IPCKernelManager(AsyncKernelManager):
        transport = CaselessStrEnum(["tcp", "ipc"], default_value="ipc", config=True)

    return {"kernel_manager_class": IPCKernelManager}


def _log(msg: str, quiet: bool) -> None:
    if not quiet:
        print(f"diffcut-lab report: {msg}", file=sys.stderr, flush=True)


def build_report(
    params: ReportParams,
    out: str | Path,
    *,
    png: bool = True,
    kernel_name: str | None = None,
    timeout: int | None = 1800,
    quiet: bool = False,
) -> dict[str, Any]:
    """Validate ``params``, execute the report notebook and write ``out`` (HTML), the executed notebook
    and PNG figures beside it, atomically (nothing is left behind when a step fails).

    Returns
    -------
    dict
        ``html``, ``notebook``, ``figures`` (list of PNG paths), ``seconds``.
    """
    import nbformat
    import papermill as pm

    t0 = time.perf_counter()
    out = Path(out)
    if out.suffix.lower() != ".html":
        raise ParameterError(f"--out {out} must end in .html (the executed notebook and figures go beside it).")
    nb_out, fig_out = out.with_suffix(".ipynb"), out.parent / f"{out.stem}_figures"
    for path, want in ((out, "a file"), (nb_out, "a file"), (fig_out, "a folder")):
        if path.exists() and path.is_dir() != (want == "a folder"):
            raise ParameterError(f"{path} is in the way: the report writes {want} there; move it or pass another --out.")
    validate(params)
    out.parent.mkdir(parents=True, exist_ok=True)
    src = report_notebook_path()
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.stem}.", suffix=".tmp", dir=out.parent))
    try:
        nb_tmp = tmp / f"{out.stem}.ipynb"
        n_images = len(params.images) or len(SAMPLE_NAMES)
        what = f"{n_images} image(s)" if params.images else f"the {n_images} sample images"
        _log(f"{what} with model {params.model!r} -> {out} (+ {nb_out.name}"
             f"{f', {fig_out.name}/' if png else ''})", quiet)  # fmt: skip
        progress_file = (tmp / "progress.tsv").resolve()  # the kernel runs in another directory
        with Progress(n_images, "diffcut-lab report: segmented", quiet=quiet) as bar, watch(progress_file, bar), \
                _environ(PROGRESS_ENV, str(progress_file)):  # fmt: skip
            try:
                pm.execute_notebook(
                    str(src),
                    str(nb_tmp),
                    parameters=params.to_dict(),
                    kernel_name=kernel_name,
                    cwd=str(tmp),
                    progress_bar=False,
                    request_save_on_cell_execute=False,
                    execution_timeout=timeout,
                    log_output=False,
                    **_kernel_options(),
                )
            except pm.PapermillExecutionError as err:
                raise DiffCutLabError(
                    f"the report notebook failed in cell {err.exec_count}: {err.ename}: {err.evalue}"
                ) from None
        nb = nbformat.read(nb_tmp, as_version=4)
        _log("exporting HTML", quiet)
        html_tmp = tmp / out.name
        export_html(nb, html_tmp, title=out.stem)
        fig_dir_tmp = tmp / f"{out.stem}_figures"
        figures: list[Path] = []
        if png:
            _log("rendering PNG figures", quiet)
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always", RuntimeWarning)
                figures = export_pngs(plotly_figures(nb), fig_dir_tmp)
            for w in caught:
                _log(f"PNG figures skipped: {w.message}", quiet)
        # move into place: notebook and figures first, the HTML (what people open) last
        _install([(nb_tmp, nb_out), (fig_dir_tmp if figures else None, fig_out), (html_tmp, out)], tmp)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    seconds = time.perf_counter() - t0
    fig_paths = [fig_out / p.name for p in figures]
    pngs = f", {len(fig_paths)} PNG figure(s) in {fig_out.name}/" if fig_paths else ""
    _log(f"wrote {out} ({out.stat().st_size / 1e6:.1f} MB), {nb_out.name}{pngs} in {seconds:.1f} s", quiet)
    return {"html": out, "notebook": nb_out, "figures": fig_paths, "seconds": seconds}


def _install(moves: list[tuple[Path | None, Path]], backup_dir: Path) -> None:
    """Move each ``src`` onto ``dst`` (``None``: remove ``dst``), all or nothing: what was at each ``dst``
    waits in ``backup_dir`` until every move succeeded, and is put back if one fails."""
    replaced: list[tuple[Path, Path | None]] = []
    try:
        for i, (src, dst) in enumerate(moves):
            backup = None
            if dst.exists():
                backup = backup_dir / f".previous-{i}"
                os.replace(dst, backup)
            replaced.append((dst, backup))
            if src is not None:
                os.replace(src, dst)
    except BaseException:
        for dst, backup in reversed(replaced):
            if dst.is_dir():
                shutil.rmtree(dst)
            elif dst.exists():
                dst.unlink()
            if backup is not None:
                os.replace(backup, dst)
        raise


def register(subparsers: Any) -> argparse.ArgumentParser:
    """Add the ``report`` command to the CLI."""
    parser = subparsers.add_parser(
        "report",
        help="segment images and write a self-contained HTML report (runs a notebook with papermill)",
        description=(
            "Segment images with DiffCut and write a self-contained HTML report: segment overlays, the tree "
            "of cuts and a step-through of every recursive cut (plotly, works offline), plus the executed "
            "notebook beside it and PNG figures. Every parameter is checked before the notebook runs; a "
            "failed run leaves no partial report behind."
        ),
        epilog=(
            "examples:\n"
            "  diffcut-lab report --model pocket --samples --out reports/demo.html\n"
            "  diffcut-lab report --model pocket --images a.jpg b.png --tau 0.5 --out reports/demo.html\n"
            "  diffcut-lab report --model segmind/SSD-1B --images photo.jpg --tau 0.4 --out reports/ssd.html"
        ),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_model_option(parser)
    src = parser.add_mutually_exclusive_group(required=True)
    src.add_argument("--images", nargs="+", metavar="IMAGE", help="image files to segment")
    src.add_argument("--samples", action="store_true",
                     help="segment the sample photos bundled with the package (offline)")
    add_config_options(parser)
    parser.add_argument("--out", default="reports/report.html",
                        help="HTML file to write (default reports/report.html); OUT.ipynb and OUT_figures/ "
                        "go beside it")
    parser.add_argument("--no-png", action="store_true", help="skip the PNG figures")
    parser.add_argument("--kernel", default=None,
                        help="Jupyter kernel to run the notebook with (default: the notebook's, python3)")
    parser.add_argument("--timeout", type=int, default=1800, help="seconds allowed per notebook cell")
    parser.add_argument("-q", "--quiet", action="store_true", help="print nothing but errors")
    parser.set_defaults(run=run)
    return parser


def params_from_args(args: argparse.Namespace) -> ReportParams:
    """Turn parsed command-line arguments into :class:`ReportParams` (image paths made absolute)."""
    images = () if args.samples else tuple(str(Path(p).expanduser().resolve()) for p in args.images)
    return ReportParams(model=args.model, images=images, config=config_from_args(args))


def run(args: argparse.Namespace) -> int:
    """Entry point of ``diffcut-lab report``."""
    build_report(params_from_args(args), args.out, png=not args.no_png, kernel_name=args.kernel,
                 timeout=args.timeout, quiet=args.quiet)
    return 0
