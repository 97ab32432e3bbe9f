"""Reports over the result schema: load runs, tables, plots, Markdown and HTML, run-to-run comparison."""

from .load import coerce, load, load_header
from .render import render_html, render_markdown, summary_table, write_report
from .tables import agreement_table, latency_table, not_ok_table, speedup_table

__all__ = [
    "agreement_table",
    "coerce",
    "latency_table",
    "load",
    "load_header",
    "not_ok_table",
    "render_html",
    "render_markdown",
    "speedup_table",
    "summary_table",
    "write_report",
]
