"""``collapse-audit report`` and ``collapse-audit compare`` (registered on the main Typer app by cli.py).

Thin: parse, call :mod:`collapse_audit.report` / :mod:`collapse_audit.compare`, print.
"""
from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer
from rich.console import Console
from rich import box
from rich.table import Table
from rich.text import Text

from .errors import InputError


def _results_path(path: Path) -> Path:
    p = Path(path)
    if p.is_dir():
        p = p / "results.json"
    if not p.is_file():
        raise InputError(f"{path}: no results.json here (give the scan's results.json or its --out folder)")
    return p


def register(app: typer.Typer, out: Console, err: Console) -> None:
    """Add the ``report`` and ``compare`` commands to ``app``."""

    @app.command()
    def report(
        results: Path = typer.Argument(..., help="results.json of a scan, or the scan's output folder."),
        output: Optional[Path] = typer.Option(None, "-o", "--output", help="HTML file to write (default: report.html beside results.json)."),
    ):
        """Re-render the HTML report from saved results (no image is read or embedded again)."""
        from .compare import load_results
        from .report import load_report_data, render_report

        rp = _results_path(results)
        res = load_results(rp)
        data = load_report_data(rp.parent)
        if data is None:
            err.print(f"note: no report_data.json beside {rp}: the report will have no map and no thumbnails")
        elif data.get("run_id") != res.get("run_id"):
            err.print(f"note: the report_data.json beside {rp} belongs to another run; the report will have no map and no thumbnails")
            data = None
        path = render_report(res, data, output or rp.parent / "report.html")
        out.print(f"report: {path}")

    @app.command()
    def compare(
        old: Path = typer.Argument(..., help="Earlier scan: results.json or output folder."),
        new: Path = typer.Argument(..., help="Later scan: results.json or output folder."),
        output: Optional[Path] = typer.Option(None, "-o", "--output", help="HTML file to write (default: compare.html in the current folder)."),
    ):
        """Compare two scans side by side: what improved and what regressed."""
        from .compare import compare_results, load_results, render_compare

        c = compare_results(load_results(old), load_results(new))
        for w in c["warnings"]:
            style = "bold red" if w.startswith("EMBEDDERS DIFFER") else "yellow"
            err.print(Text.assemble(("warning:", style), f" {w}"))
        t = Table(title=f"{old} -> {new}", title_justify="left", box=box.SIMPLE_HEAD,
                  caption="\u2193 lower is better, \u2191 higher is better, \u21921 closer to 1 is better", caption_justify="left")
        t.add_column("metric", no_wrap=True)
        t.add_column("old", justify="right", no_wrap=True)
        t.add_column("new", justify="right", no_wrap=True)
        t.add_column("change", justify="right", no_wrap=True)
        t.add_column("verdict", no_wrap=True)
        colours = {"improved": "green", "regressed": "bold red", "unchanged": "dim", "n/a": "dim"}
        for r in c["rows"]:
            fmt = lambda v: "-" if v is None else f"{v:.4g}"  # noqa: E731
            delta = "-" if r["delta"] is None else ("0" if r["delta"] == 0 else f"{r['delta']:+.3g}")
            arrow = {"lower": "\u2193", "higher": "\u2191"}.get(r["better"], "\u21921")
            t.add_row(f"{r['label']} {arrow}", fmt(r["old"]), fmt(r["new"]), delta,
                      Text(r["verdict"], style=colours[r["verdict"]]))
        out.print(t)
        n = c["counts"]
        out.print(f"{n['improved']} improved, {n['regressed']} regressed, {n['unchanged']} unchanged, {n['n/a']} n/a")
        path = render_compare(c, output or Path("compare.html"))
        out.print(f"comparison: {path}")
