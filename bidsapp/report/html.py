"""Assemble self-contained HTML pages: inline style sheet, no script, no external address.

The building blocks return HTML fragments (strings) with every piece of text escaped;
:func:`document` wraps a body into a full page and :class:`HTMLReport` gives it the
``save_as_html`` / ``_repr_html_`` / ``get_iframe`` interface of nilearn's reports.

All style rules are scoped under ``.bidsapp-report`` so that a report shown inline in a
notebook does not restyle the notebook around it.
"""

from __future__ import annotations

import html
import math
import numbers
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

__all__ = [
    "CSS",
    "HTMLReport",
    "alert",
    "badge",
    "definition_table",
    "details",
    "document",
    "esc",
    "figure",
    "format_value",
    "nav",
    "section",
    "table",
]

CSS = """
.bidsapp-report { font-family: system-ui, -apple-system, "Segoe UI", Roboto, Helvetica,
  Arial, sans-serif; color: #1d2329; line-height: 1.45; max-width: 1280px; margin: 0 auto;
  padding: 0 1.25rem 3rem; font-size: 15px; }
.bidsapp-report h1 { font-size: 1.7rem; margin: 1.2rem 0 0.3rem; }
.bidsapp-report h2 { font-size: 1.3rem; margin: 2.2rem 0 0.6rem; padding-top: 0.6rem;
  border-top: 3px solid #2b6cb0; }
.bidsapp-report h3 { font-size: 1.08rem; margin: 1.5rem 0 0.4rem; color: #2c3e50; }
.bidsapp-report p.lead { color: #4a5560; margin: 0 0 1rem; }
.bidsapp-report nav.toc { position: sticky; top: 0; z-index: 5; background: #f7f9fb;
  border-bottom: 1px solid #d5dde5; padding: 0.45rem 0.6rem; margin: 0 -0.6rem 1rem;
  font-size: 0.88rem; display: flex; flex-wrap: wrap; gap: 0.2rem 1rem; }
.bidsapp-report nav.toc a { color: #2b6cb0; text-decoration: none; white-space: nowrap; }
.bidsapp-report nav.toc a:hover { text-decoration: underline; }
.bidsapp-report figure { margin: 0.6rem 0 1.4rem; }
.bidsapp-report figure img { max-width: 100%; height: auto; border: 1px solid #e2e8f0;
  background: #fff; }
.bidsapp-report figcaption { font-size: 0.88rem; color: #4a5560; margin-top: 0.3rem;
  max-width: 70rem; }
.bidsapp-report table { border-collapse: collapse; margin: 0.4rem 0 1rem;
  font-size: 0.86rem; }
.bidsapp-report th, .bidsapp-report td { border: 1px solid #d5dde5; padding: 0.2rem 0.5rem;
  text-align: left; vertical-align: top; }
.bidsapp-report th { background: #edf2f7; font-weight: 600; }
.bidsapp-report td a, .bidsapp-report td.nowrap { white-space: nowrap; }
.bidsapp-report td.num { text-align: right; font-variant-numeric: tabular-nums; }
.bidsapp-report table.kv th { width: 15rem; }
.bidsapp-report tr.failed td { background: #fdecec; }
.bidsapp-report tr.skipped td, .bidsapp-report tr.excluded td { background: #fff8e1; }
.bidsapp-report .badge { display: inline-block; padding: 0.05rem 0.45rem; border-radius: 0.6rem;
  font-size: 0.78rem; font-weight: 600; color: #fff; background: #718096; }
.bidsapp-report .badge.ok { background: #2f855a; }
.bidsapp-report .badge.failed { background: #c53030; }
.bidsapp-report .badge.skipped, .bidsapp-report .badge.excluded { background: #b7791f; }
.bidsapp-report .badge.warning { background: #c05621; }
.bidsapp-report .alert { border-left: 5px solid #718096; background: #f7fafc;
  padding: 0.5rem 0.8rem; margin: 0.6rem 0 1rem; }
.bidsapp-report .alert.error { border-color: #c53030; background: #fdecec; }
.bidsapp-report .alert.warning { border-color: #c05621; background: #fffaf0; }
.bidsapp-report .alert.ok { border-color: #2f855a; background: #f0fff4; }
.bidsapp-report .alert ul { margin: 0.2rem 0 0.2rem 1.2rem; padding: 0; }
.bidsapp-report code { font-family: ui-monospace, SFMono-Regular, Menlo, Consolas, monospace;
  font-size: 0.84em; background: #edf2f7; padding: 0 0.2rem; border-radius: 3px;
  word-break: break-all; }
.bidsapp-report details { margin: 0.4rem 0 1rem; }
.bidsapp-report summary { cursor: pointer; color: #2b6cb0; }
.bidsapp-report .grid2 { display: grid; grid-template-columns: repeat(auto-fit,
  minmax(520px, 1fr)); gap: 0.5rem 1.5rem; align-items: start; }
.bidsapp-report .names { columns: 18rem auto; font-size: 0.85rem; margin: 0.3rem 0 1rem; }
.bidsapp-report footer { margin-top: 3rem; color: #718096; font-size: 0.8rem; }
"""

# A report must never fetch anything: the policy forbids every load except inline images
# and the inline style sheet, so a mistake shows as a missing image, not a network request.
_CSP = "default-src 'none'; img-src data:; style-src 'unsafe-inline'"


def esc(text: Any) -> str:
    """Escape any value for use as HTML text or attribute.

    Parameters
    ----------
    text : object
        Converted with ``str`` first.

    Returns
    -------
    str
        The escaped text (``&``, ``<``, ``>``, quotes).
    """
    return html.escape(str(text), quote=True)


def format_value(value: Any, precision: int = 3) -> str:
    """Format one table cell as text (``n/a`` for missing values).

    Parameters
    ----------
    value : object
        A number, string, sequence or None.
    precision : int, default=3
        Significant digits for floats.

    Returns
    -------
    str
        Plain (unescaped) text.
    """
    if value is None:
        return "n/a"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, numbers.Integral):
        return str(int(value))
    if isinstance(value, numbers.Real):
        if math.isnan(float(value)):
            return "n/a"
        return f"{float(value):.{precision}g}"
    if isinstance(value, (list, tuple)):
        return ", ".join(format_value(v, precision) for v in value) if value else "none"
    return str(value)


def _is_number(value: Any) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


def table(
    columns: Sequence[str],
    rows: Iterable[Sequence[Any]],
    row_classes: Sequence[str] | None = None,
    precision: int = 3,
    raw_columns: Sequence[str] = (),
    nowrap_columns: Sequence[str] = (),
) -> str:
    """Render rows as an HTML table.

    Parameters
    ----------
    columns : sequence of str
        Column headers.
    rows : iterable of sequences
        Cell values, formatted with :func:`format_value` and escaped.
    row_classes : sequence of str, optional
        A CSS class per row (``failed``, ``skipped``) to colour it.
    precision : int, default=3
        Significant digits for floats.
    raw_columns : sequence of str, default=()
        Columns whose cells are already HTML (for example a :func:`badge`); not escaped.
    nowrap_columns : sequence of str, default=()
        Columns whose cells never wrap (short identifiers such as run names).

    Returns
    -------
    str
        A ``<table>`` fragment.
    """
    head = "".join(f"<th>{esc(c)}</th>" for c in columns)
    raw = {columns.index(c) for c in raw_columns if c in columns}
    nowrap = {columns.index(c) for c in nowrap_columns if c in columns}
    body = []
    for i, row in enumerate(rows):
        cls = row_classes[i] if row_classes is not None and row_classes[i] else ""
        cells = []
        for j, value in enumerate(row):
            classes = (["num"] if _is_number(value) and j not in raw else []) + (
                ["nowrap"] if j in nowrap else []
            )
            attr = f' class="{" ".join(classes)}"' if classes else ""
            text = value if j in raw else esc(format_value(value, precision))
            cells.append(f"<td{attr}>{text}</td>")
        attr = f' class="{esc(cls)}"' if cls else ""
        body.append(f"<tr{attr}>{''.join(cells)}</tr>")
    return f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>"


def definition_table(items: Mapping[str, Any], precision: int = 4) -> str:
    """Render a two-column (name, value) table.

    Parameters
    ----------
    items : mapping
        Names and values, in display order.
    precision : int, default=4
        Significant digits for floats.

    Returns
    -------
    str
        A ``<table class="kv">`` fragment.
    """
    rows = "".join(
        f"<tr><th>{esc(k)}</th><td>{esc(format_value(v, precision))}</td></tr>"
        for k, v in items.items()
    )
    return f'<table class="kv"><tbody>{rows}</tbody></table>'


def badge(status: str) -> str:
    """Return a coloured status label (``ok``, ``failed``, ``skipped``, ``warning``).

    Parameters
    ----------
    status : str
        The status word.

    Returns
    -------
    str
        A ``<span class="badge ...">`` fragment.
    """
    return f'<span class="badge {esc(status)}">{esc(status)}</span>'


def alert(messages: Sequence[str], kind: str = "warning", title: str | None = None) -> str:
    """Render messages in a coloured box.

    Parameters
    ----------
    messages : sequence of str
        Plain-text messages (escaped).
    kind : {"warning", "error", "ok", "info"}, default="warning"
        Colour of the box.
    title : str, optional
        Bold first line.

    Returns
    -------
    str
        A ``<div class="alert ...">`` fragment.
    """
    head = f"<strong>{esc(title)}</strong>" if title else ""
    if len(messages) == 1 and not title:
        inner = f"{esc(messages[0])}"
    else:
        inner = head + "<ul>" + "".join(f"<li>{esc(m)}</li>" for m in messages) + "</ul>"
        if not messages:
            inner = head
    return f'<div class="alert {esc(kind)}">{inner}</div>'


def figure(
    data_uri: str, alt: str, caption: str | None = None, fig_id: str = "", kind: str = ""
) -> str:
    """Render an embedded image with its caption.

    Parameters
    ----------
    data_uri : str
        A ``data:image/png;base64,...`` (or SVG) URI; external addresses are refused.
    alt : str
        Alternative text (what the figure shows).
    caption : str, optional
        Plain-text caption (escaped).
    fig_id : str, default=""
        Anchor id of the figure.
    kind : str, default=""
        What the figure shows (``contours``, ``carpet``...), written as ``data-figure``.

    Returns
    -------
    str
        A ``<figure>`` fragment.

    Raises
    ------
    ValueError
        When ``data_uri`` is not a ``data:image/`` URI (a report must work offline).
    """
    if not data_uri.startswith("data:image/"):
        raise ValueError("figures must be embedded as data:image/ URIs, not linked")
    ident = f' id="{esc(fig_id)}"' if fig_id else ""
    ident += f' data-figure="{esc(kind)}"' if kind else ""
    cap = f"<figcaption>{esc(caption)}</figcaption>" if caption else ""
    return f'<figure{ident}><img src="{data_uri}" alt="{esc(alt)}">{cap}</figure>'


def details(summary: str, content: str) -> str:
    """Render a collapsed block (native ``<details>``; no script).

    Parameters
    ----------
    summary : str
        Plain-text label shown when collapsed (escaped).
    content : str
        HTML shown when expanded.

    Returns
    -------
    str
        A ``<details>`` fragment.
    """
    return f"<details><summary>{esc(summary)}</summary>{content}</details>"


def section(title: str, content: str, anchor: str = "", level: int = 2) -> str:
    """Render a titled section.

    Parameters
    ----------
    title : str
        Heading text (escaped).
    content : str
        HTML of the section body.
    anchor : str, default=""
        Anchor id, for :func:`nav` links.
    level : int, default=2
        Heading level (2 or 3).

    Returns
    -------
    str
        A ``<section>`` fragment.
    """
    ident = f' id="{esc(anchor)}"' if anchor else ""
    return f"<section{ident}><h{level}>{esc(title)}</h{level}>{content}</section>"


def nav(links: Sequence[tuple[str, str]]) -> str:
    """Render the sticky table of contents.

    Parameters
    ----------
    links : sequence of (anchor, label)
        In-page anchors (without ``#``) and their labels.

    Returns
    -------
    str
        A ``<nav>`` fragment (empty when there are no links).
    """
    if not links:
        return ""
    items = "".join(f'<a href="#{esc(a)}">{esc(label)}</a>' for a, label in links)
    return f'<nav class="toc">{items}</nav>'


def anchor_id(text: str) -> str:
    """Make an HTML id from any text (letters, digits and dashes).

    Parameters
    ----------
    text : str
        Free text, such as a run name.

    Returns
    -------
    str
        A valid, readable id.
    """
    out = "".join(c if c.isalnum() else "-" for c in text)
    return "-".join(p for p in out.split("-") if p) or "section"


def document(title: str, body: str) -> str:
    """Wrap a body into a complete, self-contained HTML page.

    Parameters
    ----------
    title : str
        Page title (escaped).
    body : str
        HTML fragment placed inside ``<div class="bidsapp-report">``.

    Returns
    -------
    str
        The page, starting with ``<!DOCTYPE html>``.
    """
    return (
        "<!DOCTYPE html>\n"
        '<html lang="en">\n<head>\n<meta charset="utf-8">\n'
        f'<meta http-equiv="Content-Security-Policy" content="{_CSP}">\n'
        '<meta name="viewport" content="width=device-width, initial-scale=1">\n'
        f"<title>{esc(title)}</title>\n<style>{CSS}</style>\n</head>\n<body>\n"
        f'<div class="bidsapp-report">\n{body}\n</div>\n</body>\n</html>\n'
    )


class HTMLReport:
    """A report as one HTML page, displayed inline in notebooks.

    The interface follows nilearn's ``HTMLReport``: ``save_as_html(path)`` writes the page,
    ``_repr_html_()`` is what Jupyter shows, ``get_iframe()`` wraps the page for embedding,
    ``str(report)`` and ``report.html`` give the full page.

    Parameters
    ----------
    title : str
        Page title.
    body : str
        HTML body fragment (built with this module's helpers).
    width, height : int, default=1000, 800
        Size of the inline frame from :meth:`get_iframe`, in CSS pixels.
    warnings : sequence of str, optional
        Problems found while building the report (also shown in the page).
    """

    def __init__(
        self,
        title: str,
        body: str,
        width: int = 1000,
        height: int = 800,
        warnings: Sequence[str] = (),
    ) -> None:
        self.title = title
        self.body = body
        self.width = width
        self.height = height
        self.warnings = list(warnings)
        self.html = document(title, body)

    def save_as_html(self, file_name: str | Path) -> Path:
        """Write the page to a file (UTF-8), creating its directory.

        Parameters
        ----------
        file_name : str or Path
            Destination, usually ending in ``.html``.

        Returns
        -------
        Path
            The path written.
        """
        from bidsapp.dataset.fileio import atomic_write_text

        return atomic_write_text(file_name, self.html)

    def get_standalone(self) -> str:
        """Return the complete page.

        Returns
        -------
        str
            The HTML document.
        """
        return self.html

    def get_iframe(self, width: int | None = None, height: int | None = None) -> str:
        """Return the page wrapped in an inline frame (``srcdoc``).

        Parameters
        ----------
        width, height : int, optional
            Frame size in CSS pixels; the report's defaults when None.

        Returns
        -------
        str
            An ``<iframe>`` fragment.
        """
        width = self.width if width is None else width
        height = self.height if height is None else height
        return (
            f'<iframe srcdoc="{esc(self.html)}" width="{int(width)}" height="{int(height)}" '
            'style="border: 0"></iframe>'
        )

    def _repr_html_(self) -> str:
        """Return the body with its scoped style sheet, for Jupyter."""
        return f'<style>{CSS}</style><div class="bidsapp-report">{self.body}</div>'

    def __str__(self) -> str:
        return self.html

    def __repr__(self) -> str:
        return f"<HTMLReport {self.title!r}: {len(self.html)} characters>"
