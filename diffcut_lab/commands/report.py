"""``diffcut-lab report``: segment images and write a self-contained HTML report.

The report is the notebook ``diffcut_lab/notebooks/05_report.ipynb`` (package data, so an installed
package finds it too), executed with papermill. Parameters are checked before anything runs; the outputs
are written to a temporary directory beside the target and moved into place only when everything worked:

* ``OUT.html``: the report (plotly.js embedded, widget state cleared, code hidden), viewable offline;
* ``OUT.ipynb``: the executed notebook, beside it;
* ``OUT_figures/*.png``: every figure as a PNG (kaleido with a Chromium; skipped with a warning when no
  browser can be started).

The page opens complete with no network: plotly.js is embedded once, and nothing is loaded from a CDN
(no MathJax, no require.js, no mermaid). File names and settings are untrusted text: they reach the page
through :mod:`diffcut_lab._escape` only.

Nothing the command did not write is overwritten: each output carries a mark of its own content (the
HTML a closing comment with its SHA-256, the notebook its cells' SHA-256 in its metadata, the figures
folder a list of its files' hashes); an existing file without a matching mark (a notebook of the user's
own, or one edited since) makes the command stop before it runs, with the way out named.
"""

from __future__ import annotations

import argparse
import errno
import hashlib
import json
import os
import re
import shutil
import sys
import textwrap
import time
import warnings
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .._escape import one_line
from .._scratch import install, scratch_dir, terminate_as_interrupt
from ..config import DiffCutConfig
from ..datasets.samples import SAMPLE_NAMES
from ..errors import DiffCutLabError, ImageInputError, ParameterError
from ..progress import PROGRESS_ENV, Progress, watch
from ._options import add_config_options, add_model_option, add_threads_option, config_from_args

__all__ = [
    "ReportParams",
    "build_report",
    "register",
    "report_notebook_path",
    "resolve_params",
    "run",
    "validate",
    "written_by_report",
]

REPORT_NOTEBOOK = "05_report.ipynb"
PLOTLY_MIME = "application/vnd.plotly.v1+json"
WIDGET_MIME = "application/vnd.jupyter.widget-view+json"
#: the last line of a report's HTML: ``<!-- written by diffcut-lab report; sha256 HEX -->``
HTML_MARK = "<!-- written by diffcut-lab report; sha256 {} -->\n"
_HTML_MARK = re.compile(rb"<!-- written by diffcut-lab report; sha256 ([0-9a-f]{64}) -->\n\Z")
#: the key of a report notebook's metadata that holds the SHA-256 of its cells
NOTEBOOK_MARK = "diffcut_lab_report"
#: the file in a report's figures folder that lists its figures and their SHA-256
FIGURES_MARK = ".diffcut-lab-report.json"
#: the HTML template: nbconvert's lab template without the scripts it loads from CDNs
_TEMPLATE = """{%- extends 'index.html.j2' -%}
{%- block html_head_js -%}{%- endblock html_head_js -%}
{%- block html_head_js_mathjax -%}{%- endblock html_head_js_mathjax -%}
{%- block html_head_js_mermaidjs -%}{%- endblock html_head_js_mermaidjs -%}
{%- block html_head_css -%}<meta name="generator" content="diffcut-lab report">{%- endblock html_head_css -%}
"""


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
        _check_image_path(p)
        try:
            load_image(p)
        except ImageInputError:
            raise
        except Exception as exc:  # PIL raises many kinds of errors for unreadable files
            raise ImageInputError(
                f"image {one_line(path)} cannot be read ({one_line(exc)}); pass PNG, JPEG "
                "or another format Pillow reads."
            ) from exc
    if check_model:
        from ..backbones import load_backbone
        from ..pipeline import DiffCut

        DiffCut(load_backbone(params.model, weights=False), params.config).check()
    return params


def _check_image_path(p: Path) -> None:
    """Raise :class:`ImageInputError` with what to pass instead unless ``p`` is an image file's path."""
    shown = one_line(p)
    try:
        p.stat()
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise ImageInputError(
                f"image {shown} is a loop of symbolic links (it never reaches a file); "
                "pass the image file itself to --images."
            ) from None
        if exc.errno == errno.ENOENT:
            broken = " (a symbolic link to a missing file)" if p.is_symlink() else ""
            raise ImageInputError(
                f"image {shown} does not exist{broken}; pass existing image files to --images."
            ) from None
        raise ImageInputError(
            f"image {shown} cannot be opened ({one_line(exc.strerror or exc)}); pass "
            "image files you can read to --images."
        ) from None
    if p.is_dir():
        raise ImageInputError(
            f"image {shown} is a folder; pass the image files in it to --images (for example {shown}/*.png)."
        )
    if not p.is_file():
        raise ImageInputError(f"image {shown} is not a regular file; pass image files to --images.")


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


def _draw_plotly(nb: Any) -> Any:
    """Give each plotly figure an HTML drawing made from its JSON: no MathJax from a CDN (the notebook
    renderer's own drawing loads it), no plotly logo linking to plotly.com, and plotly.js embedded once:
    by the renderer's set-up output when the notebook has one, else before the first figure."""
    import plotly.io as pio

    first = True
    for cell in nb.cells:
        for out in cell.get("outputs", []):
            data = out.get("data") or {}
            fig = data.pop(PLOTLY_MIME, None)
            if fig is None:
                if "plotly.js v" in str(data.get("text/html", "")):  # plotly.js is on the page already
                    first = False
                continue
            data["text/html"] = pio.to_html(
                fig,
                include_plotlyjs=first,
                include_mathjax=False,
                full_html=False,
                default_width="100%",
                default_height=525,
                validate=False,
                config={"displaylogo": False},  # no link to plotly.com
                auto_play=False,  # a step-through opens on its first step, as its slider says
            )
            first = False
    return nb


def export_html(nb: Any, path: Path, *, title: str) -> None:
    """Write ``nb`` as self-contained HTML: code hidden, widget state cleared, plotly.js embedded once,
    nothing loaded from the network; the last line marks the file as written by the report."""
    import jinja2
    import nbformat
    from nbconvert import HTMLExporter
    from nbconvert.preprocessors import ClearMetadataPreprocessor

    nb = nbformat.from_dict(json.loads(json.dumps(nb)))
    clear = ClearMetadataPreprocessor(enabled=True, preserve_nb_metadata_mask={"kernelspec", "language_info"})
    nb, _ = clear.preprocess(nb, {})
    nb.metadata.pop("widgets", None)
    nb = _draw_plotly(_strip_for_html(nb))
    exporter = HTMLExporter(
        exclude_input=True,
        exclude_input_prompt=True,
        exclude_output_prompt=True,
        extra_loaders=[jinja2.DictLoader({"diffcut_report.html.j2": _TEMPLATE})],
        template_file="diffcut_report.html.j2",
    )
    body, _ = exporter.from_notebook_node(nb, resources={"metadata": {"name": title}})
    data = body.encode("utf-8")
    if not data.endswith(b"\n"):
        data += b"\n"
    path.write_bytes(data + HTML_MARK.format(hashlib.sha256(data).hexdigest()).encode("ascii"))


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
        pio.write_images(
            objs,
            paths,
            format="png",
            scale=scale,
            width=[f.layout.width or 1100 for f in objs],
            height=[f.layout.height or 500 for f in objs],
        )
    except Exception as exc:
        reason = textwrap.shorten(f"{type(exc).__name__}: {exc}", 120, placeholder=" ...")  # whole words
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


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _cells_digest(nb: Any) -> str:
    """SHA-256 of a notebook's cells as read by nbformat: their kind, source and outputs."""
    cells = [{"cell_type": c.get("cell_type"), "source": c.get("source"), "outputs": c.get("outputs", [])}
             for c in nb.cells]  # fmt: skip
    return _sha256(json.dumps(cells, sort_keys=True, ensure_ascii=False).encode("utf-8"))


def _mark_notebook(path: Path) -> None:
    """Record the SHA-256 of the cells of the notebook at ``path`` in its metadata."""
    import nbformat

    nbformat.write(nbformat.read(path, as_version=4), path)  # the digest is of what a reader gets back
    nb = nbformat.read(path, as_version=4)
    nb.metadata[NOTEBOOK_MARK] = {"cells_sha256": _cells_digest(nb)}
    nbformat.write(nb, path)


def _mark_figures(directory: Path) -> None:
    """List the figures in ``directory`` with their SHA-256 in :data:`FIGURES_MARK`."""
    listing = {p.name: _sha256(p.read_bytes()) for p in sorted(directory.iterdir()) if p.name != FIGURES_MARK}
    (directory / FIGURES_MARK).write_text(json.dumps(listing, indent=1) + "\n", encoding="utf-8")


def written_by_report(path: str | Path) -> bool:
    """Whether ``path`` is a report output exactly as ``diffcut-lab report`` wrote it.

    Parameters
    ----------
    path : str or Path
        A report's HTML, its executed notebook (``.ipynb``) or its figures folder.

    Returns
    -------
    bool
        True when the file carries the report's mark and its content matches the mark's SHA-256; False
        for anything else (another file, a report file edited since, an unreadable or missing path).
    """
    path = Path(path)
    try:
        if path.is_dir():
            listing = json.loads((path / FIGURES_MARK).read_text(encoding="utf-8"))
            names = {p.name for p in path.iterdir()} - {FIGURES_MARK}
            return (isinstance(listing, dict) and names == set(listing)
                    and all((path / n).is_file() and not (path / n).is_symlink()
                            and _sha256((path / n).read_bytes()) == listing[n] for n in names))  # fmt: skip
        if path.suffix == ".ipynb":
            import nbformat

            nb = nbformat.read(path, as_version=4)
            mark = nb.metadata.get(NOTEBOOK_MARK)
            return isinstance(mark, dict) and mark.get("cells_sha256") == _cells_digest(nb)
        data = path.read_bytes()
        m = _HTML_MARK.search(data)
        return m is not None and _sha256(data[: m.start()]) == m.group(1).decode("ascii")
    except Exception:  # unreadable or malformed (nbformat raises its own kinds): not known to be ours
        return False


def _check_targets(targets: Sequence[tuple[Path, str]]) -> None:
    """Refuse to go on when a target is in the way or holds something the report did not write."""
    for path, want in targets:
        if not (path.exists() or path.is_symlink()):
            continue
        if path.is_dir() != (want == "a folder"):
            raise ParameterError(
                f"{one_line(path)} is in the way: the report writes {want} there; move it or "
                "pass another --out."
            )
        if not written_by_report(path):
            raise ParameterError(
                f"{one_line(path)} was not written by diffcut-lab report (or was changed since), so the report "
                f"will not replace it; pass another --out, or move {one_line(path.name)} away."
            )


def resolve_params(params: ReportParams) -> ReportParams:
    """``params`` with local paths made absolute (the notebook runs in another directory).

    Parameters
    ----------
    params : ReportParams
        The report's parameters, paths relative to the current directory allowed.

    Returns
    -------
    ReportParams
        The same parameters where a model that names an existing path (not ``"pocket"``, which
        :func:`diffcut_lab.load_backbone` reads first) and every image are absolute paths; hub ids and
        ``"pocket"`` stay as they are.
    """
    model = params.model
    if model != "pocket" and Path(model).expanduser().exists():
        model = str(_absolute(model))
    images = tuple(str(_absolute(p)) for p in params.images)
    return ReportParams(model=model, images=images, config=params.config)


def _absolute(path: str | Path) -> Path:
    """``path`` made absolute, with links resolved where they can be (a loop of links is kept as given,
    for :func:`validate` to name)."""
    p = Path(path).expanduser()
    try:
        return p.resolve()
    except (OSError, RuntimeError):  # a loop of symbolic links
        return Path(os.path.abspath(p))


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
    and PNG figures beside it, all or nothing (nothing is left behind when a step fails or the run is
    interrupted or terminated).

    Files already at those places are replaced only when this command wrote them and they are unchanged
    since; anything else there (a notebook of the user's own, say) stops the command before it runs.

    Returns
    -------
    dict
        ``html``, ``notebook``, ``figures`` (list of PNG paths), ``seconds``.

    Raises
    ------
    ParameterError
        ``out`` does not end in ``.html``, or something the report did not write is at one of its outputs.
    ImageInputError
        An image is missing, a folder, a loop of links or unreadable.
    DiffCutLabError
        The notebook failed (the cell and the error are named).
    """
    t0 = time.perf_counter()
    out = Path(out)
    if out.suffix.lower() != ".html":
        raise ParameterError(
            f"--out {one_line(out)} must end in .html (the executed notebook and figures go beside it)."
        )
    nb_out, fig_out = out.with_suffix(".ipynb"), out.parent / f"{out.stem}_figures"
    targets = [(out, "a file"), (nb_out, "a file"), (fig_out, "a folder")]
    _check_targets(targets)
    params = validate(resolve_params(params))
    out.parent.mkdir(parents=True, exist_ok=True)
    with terminate_as_interrupt(), scratch_dir(out.parent, out.stem) as tmp:
        figures = _run_and_export(params, tmp, out, nb_out, fig_out, png=png, kernel_name=kernel_name,
                                  timeout=timeout, quiet=quiet)  # fmt: skip
        _check_targets(targets)  # again: something may have been put there while the notebook ran
        # move into place: notebook and figures first, the HTML (what people open) last
        fig_dir_tmp = tmp / fig_out.name
        install([(tmp / nb_out.name, nb_out), (fig_dir_tmp if figures else None, fig_out), (tmp / out.name, out)],
                tmp)  # fmt: skip
    seconds = time.perf_counter() - t0
    fig_paths = [fig_out / p.name for p in figures]
    pngs = f", {len(fig_paths)} PNG figure(s) in {fig_out.name}/" if fig_paths else ""
    _log(f"wrote {out} ({out.stat().st_size / 1e6:.1f} MB), {nb_out.name}{pngs} in {seconds:.1f} s", quiet)
    return {"html": out, "notebook": nb_out, "figures": fig_paths, "seconds": seconds}


def _run_and_export(
    params: ReportParams,
    tmp: Path,
    out: Path,
    nb_out: Path,
    fig_out: Path,
    *,
    png: bool,
    kernel_name: str | None,
    timeout: int | None,
    quiet: bool,
) -> list[Path]:
    """Execute the notebook and write the HTML, the notebook and the figures into ``tmp``."""
    import nbformat
    import papermill as pm

    src = report_notebook_path()
    nb_tmp = tmp / nb_out.name
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
                f"the report notebook failed in cell {err.exec_count}: {err.ename}: {one_line(err.evalue)}"
            ) from None
    nb = nbformat.read(nb_tmp, as_version=4)
    _log("exporting HTML", quiet)
    export_html(nb, tmp / out.name, title=out.stem)
    _mark_notebook(nb_tmp)
    figures: list[Path] = []
    if png:
        _log("rendering PNG figures", quiet)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always", RuntimeWarning)
            figures = export_pngs(plotly_figures(nb), tmp / fig_out.name)
        for w in caught:
            _log(f"PNG figures skipped: {w.message}", quiet)
        if figures:
            _mark_figures(tmp / fig_out.name)
    return figures


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
    add_threads_option(parser)
    src = parser.add_mutually_exclusive_group(required=True)
    src.add_argument("--images", nargs="+", metavar="IMAGE", help="image files to segment")
    src.add_argument(
        "--samples", action="store_true", help="segment the sample photos bundled with the package (offline)"
    )
    add_config_options(parser)
    parser.add_argument(
        "--out",
        default="reports/report.html",
        help="HTML file to write (default reports/report.html); OUT.ipynb and OUT_figures/ go beside it",
    )
    parser.add_argument("--no-png", action="store_true", help="skip the PNG figures")
    parser.add_argument(
        "--kernel",
        default=None,
        help="Jupyter kernel to run the notebook with (default: the notebook's, python3)",
    )
    parser.add_argument("--timeout", type=int, default=1800, help="seconds allowed per notebook cell")
    parser.add_argument("-q", "--quiet", action="store_true", help="print nothing but errors")
    parser.set_defaults(run=run)
    return parser


def params_from_args(args: argparse.Namespace) -> ReportParams:
    """Turn parsed command-line arguments into :class:`ReportParams` (local paths made absolute)."""
    images = () if args.samples else tuple(args.images)
    return resolve_params(ReportParams(model=args.model, images=images, config=config_from_args(args)))


def run(args: argparse.Namespace) -> int:
    """Entry point of ``diffcut-lab report``."""
    build_report(
        params_from_args(args),
        args.out,
        png=not args.no_png,
        kernel_name=args.kernel,
        timeout=args.timeout,
        quiet=args.quiet,
    )
    return 0
