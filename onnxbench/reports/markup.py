"""Report markup shared by the run report (:mod:`.render`) and the run comparison (:mod:`.compare`): the
:class:`Table` they fill, Markdown and HTML tables, the self-contained HTML page (shell and CSS), inlined images
and PNG saving.

Output is deterministic: the same table gives the same bytes, and PNGs carry no software/version stamp.
"""

from __future__ import annotations

import base64
import html
import io
from dataclasses import dataclass, field

import pandas as pd

from . import tables
from .format import MISSING, Spec, display, is_timed


@dataclass
class Table:
    """One table: raw values under schema/derived column names (see :mod:`.format`).

    Attributes:
        frame: the values; empty frames render as ``empty``.
        subtitle: a heading above the table ("" for none).
        specs: display specs for derived columns (label, formatter, numeric alignment).
        fail: per row, whether to mark it as a failure (None: no row is marked).
        empty: the text shown instead of an empty table.
        busy_mark: appended to every value of a timing column (:func:`~.format.is_timed`): the run was measured
            on a busy machine ("" for none).
    """

    frame: pd.DataFrame
    subtitle: str = ""
    specs: dict[str, Spec] = field(default_factory=dict)
    fail: list[bool] | None = None
    empty: str = "none"
    busy_mark: str = ""

    @property
    def timed(self) -> bool:
        """Whether the table has a timing column."""
        return any(is_timed(c) for c in self.frame.columns)


#: Display labels of the columns emphasised on failure rows.
MARK_LABELS = frozenset({"agreement", "status", "verdict", "failed on"})


def _prepare(table: Table) -> tuple[pd.DataFrame, list[bool], str, list[bool]]:
    """Drop descriptive columns that are constant over the table (named in a note instead), format."""
    frame = table.frame.reset_index(drop=True)
    note = ""
    if len(frame):
        constant = [c for c in tables.DESCRIPTIVE if c in frame and c not in tables.varying(frame, [c])]
        constant = [c for c in constant if frame[c].notna().all()]
        if constant:
            note = "All rows: " + "; ".join(f"{c.replace('_', ' ')} {frame[c].iloc[0]}" for c in constant) + "."
            frame = frame.drop(columns=constant)
    text, numeric = display(frame, table.specs)
    if table.busy_mark:
        for position, column in enumerate(frame.columns):
            if is_timed(column):
                label = text.columns[position]
                # "none agreed", "no decode step ...": texts where a figure would be, not figures
                text[label] = [v if v == MISSING or v.startswith("no") else v + table.busy_mark
                               for v in text[label]]
    fail = table.fail if table.fail is not None else [False] * len(text)
    return text, numeric, note, fail


def _md_cell(value: str) -> str:
    return value.replace("|", "\\|").replace("\n", " ")


def md_table(table: Table) -> list[str]:
    """``table`` as Markdown lines (a note line for constant columns, then a pipe table; failure rows have their
    :data:`MARK_LABELS` cells in bold), ending with a blank line."""
    if table.frame.empty:
        return [f"_{table.empty}_", ""]
    text, numeric, note, fail = _prepare(table)
    labels = list(text.columns)
    mark_idx = {i for i, label in enumerate(labels) if label in MARK_LABELS}
    lines = [f"_{note}_", ""] if note else []
    lines.append("| " + " | ".join(_md_cell(c) for c in labels) + " |")
    lines.append("|" + "|".join("---:" if n else ":---" for n in numeric) + "|")
    for i, row in enumerate(text.itertuples(index=False)):
        cells = [_md_cell(v) for v in row]
        if fail[i]:
            cells = [f"**{c}**" if j in mark_idx else c for j, c in enumerate(cells)]
        lines.append("| " + " | ".join(cells) + " |")
    return lines + [""]


CSS = """
:root{--fg:#1d2330;--muted:#5b6475;--line:#dde1e8;--head:#f3f5f8;--fail:#fde8e8;--failfg:#a11;--accent:#2b5fad}
*{box-sizing:border-box}
body{font:14px/1.5 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;color:var(--fg);margin:0;padding:1.5em 2em;
max-width:1280px}
h1{font-size:1.6em;margin:0 0 .2em}h2{font-size:1.25em;margin:1.6em 0 .4em;padding-bottom:.2em;
border-bottom:2px solid var(--line)}h3{font-size:1.02em;margin:1.2em 0 .3em}
p.intro,p.note,p.meta{color:var(--muted);margin:.2em 0 .6em}p.note{font-style:italic}
nav ul{list-style:none;padding:0;margin:.6em 0 1em;display:flex;flex-wrap:wrap;gap:.3em 1.2em}
nav a{color:var(--accent);text-decoration:none}nav a:hover{text-decoration:underline}
.scroll{overflow-x:auto;margin-bottom:.8em}
table.tbl{border-collapse:collapse;font-size:13px}
table.tbl th,table.tbl td{border-bottom:1px solid var(--line);padding:4px 10px;text-align:left;white-space:nowrap}
table.tbl th{background:var(--head);font-weight:600;position:sticky;top:0}
table.tbl td.num,table.tbl th.num{text-align:right;font-variant-numeric:tabular-nums}
table.tbl tbody tr:nth-child(even){background:#fafbfc}
table.tbl tr.fail,table.tbl tbody tr.fail:nth-child(even){background:var(--fail)}
table.tbl tr.fail td:first-child{box-shadow:inset 3px 0 0 var(--failfg)}
td.mark{color:var(--failfg);font-weight:700}
p.warn{background:var(--fail);color:var(--failfg);font-weight:600;padding:.4em .7em;margin:.4em 0;
border-left:3px solid var(--failfg)}
table.tbl td.wrap{white-space:normal;min-width:18em;overflow-wrap:anywhere}
figure{margin:.5em 0 1.2em}figure img{max-width:100%;border:1px solid var(--line)}
figcaption{color:var(--muted);font-size:.9em}
"""


def html_table(table: Table) -> str:
    """``table`` as an HTML fragment (class ``tbl`` of :data:`CSS`; failure rows in class ``fail``)."""
    if table.frame.empty:
        return f"<p class='note'>{html.escape(table.empty)}</p>"
    text, numeric, note, fail = _prepare(table)
    out = [f"<p class='note'>{html.escape(note)}</p>"] if note else []
    out.append("<div class='scroll'><table class='tbl'><thead><tr>")
    out += [f"<th{' class=num' if n else ''}>{html.escape(c)}</th>" for c, n in zip(text.columns, numeric,
                                                                                     strict=True)]
    out.append("</tr></thead><tbody>")
    for i, row in enumerate(text.itertuples(index=False)):
        out.append("<tr class='fail'>" if fail[i] else "<tr>")
        for label, value, n in zip(text.columns, row, numeric, strict=True):
            cls = ["num"] if n else []
            if fail[i] and label in MARK_LABELS:
                cls.append("mark")
            if len(value) > 60:  # long reasons, paths and lists wrap instead of widening the table past the page
                cls.append("wrap")
            attr = f" class='{' '.join(cls)}'" if cls else ""
            out.append(f"<td{attr}>{html.escape(value)}</td>")
        out.append("</tr>")
    out.append("</tbody></table></div>")
    return "".join(out)


def html_figure(png: bytes, title: str, caption: bool = True) -> str:
    """A ``<figure>`` with ``png`` inlined as a base64 data URI (no file next to the page), ``title`` as its alt
    text and, with ``caption``, as its caption."""
    data = base64.b64encode(png).decode()
    below = f"<figcaption>{html.escape(title)}</figcaption>" if caption else ""
    return f"<figure><img alt='{html.escape(title)}' src='data:image/png;base64,{data}'>{below}</figure>"


def html_page(title: str, body: list[str]) -> str:
    """A single self-contained HTML page: ``title`` (escaped here), inline :data:`CSS`, the ``body`` fragments
    one per line (already HTML), no scripts."""
    parts = ["<!doctype html>", "<html lang='en'><head><meta charset='utf-8'>",
             "<meta name='viewport' content='width=device-width, initial-scale=1'>",
             f"<title>{html.escape(title)}</title><style>{CSS}</style></head><body>", *body, "</body></html>"]
    return "\n".join(parts) + "\n"


def save_png(fig) -> bytes:
    """PNG bytes of the matplotlib figure ``fig`` (110 dpi, no software/version stamp, so the same figure gives
    the same bytes on one machine); closes the figure."""
    import matplotlib.pyplot as plt

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, metadata={"Software": None})
    plt.close(fig)
    return buf.getvalue()
