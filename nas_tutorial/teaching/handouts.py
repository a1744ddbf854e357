"""Handouts: the notebooks as self-contained HTML, and a check of what a reader sees.

``make html`` runs ``nas-tutorial handouts``: every notebook of ``notebooks/`` is
exported with nbconvert to ``handouts/NAME.html`` (images inline, no kernel, no network),
then opened in headless Chromium (Debian's ``chromium``), which counts the figures and
drawings it actually rendered: ``<img>`` elements that decoded to a picture and inline SVG
drawings. :func:`figure_outputs` counts what each notebook holds, so the two can be
compared. No paper here: this is about reading the notebooks, not about NAS.
"""
from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

from ..viz.notebook import chromium

FIGURE_TYPES = ("application/vnd.plotly.v1+json", "image/svg+xml", "image/png")
# What a saved notebook must not show a reader without a kernel.
# ("0%|" is matched as a bar at 0%, not inside 10% or 100%.)
STALE = {"0%|": "a frozen progress bar", "NBVAL_": "an nbval comment marker",
         "HBox(children=": "a widget printed as text", "VBox(children=": "a widget printed as text",
         "interactive(children=": "a widget printed as text",
         "<graphviz.graphs.Digraph": "a drawing printed as text",
         "FigureWidget({": "a figure widget printed as text"}


def figure_outputs(nb) -> int:
    """Outputs of a notebook that show a figure or a drawing (plotly, SVG or PNG)."""
    return sum(1 for cell in nb.cells if cell.cell_type == "code"
               for out in cell.get("outputs", [])
               if any(t in out.get("data", {}) for t in FIGURE_TYPES))


def problems(nb) -> list:
    """What a reader without a kernel would see wrong in a saved notebook: stale text (see
    ``STALE``), a plotly figure without its PNG copy, an SVG drawing without a PNG."""
    found = []
    for k, cell in enumerate(nb.cells):
        if cell.cell_type != "code":
            continue
        for out in cell.get("outputs", []):
            data = out.get("data", {})
            text = out.get("text", "") + "".join(
                v if isinstance(v, str) else "".join(v) if isinstance(v, list) else ""
                for key, v in data.items() if key.startswith("text/"))
            for needle, what in STALE.items():
                if re.search(r"(?<![\d.])0%\|" if needle == "0%|" else re.escape(needle), text):
                    found.append(f"cell {k}: {what} ({needle!r})")
            for kind in ("application/vnd.plotly.v1+json", "image/svg+xml"):
                if kind in data and "image/png" not in data:
                    found.append(f"cell {k}: {kind} without a PNG copy")
        if "NBVAL_" in cell.source:
            found.append(f"cell {k}: an nbval comment marker in the source")
    return found


# -- text that reads in one sitting ---------------------------------------------------------
SECTION_WORDS = 450    # about two minutes at 220 words a minute (a "##" section)
PARAGRAPH_WORDS = 150  # a paragraph or list item a reader takes in at once
_WORD = re.compile(r"[A-Za-z0-9][\w'-]*")
_ITEM = re.compile(r"^\s*(?:[-*]|\d+\.)\s+")


def _paragraphs(text: str) -> list:
    """Blank-line paragraphs, each list item and heading on its own (code fences left out)."""
    text = re.sub(r"```.*?```", "", text, flags=re.S)
    out = []
    for block in re.split(r"\n\s*\n", text):
        current = []
        for line in block.splitlines():
            if (_ITEM.match(line) or line.startswith("#")) and current:
                out.append("\n".join(current))
                current = []
            current.append(line)
        if current:
            out.append("\n".join(current))
    return out


def reading_problems(nb, section_words: int = SECTION_WORDS,
                     paragraph_words: int = PARAGRAPH_WORDS) -> list:
    """Markdown that does not read in one sitting: a section (its cells up to the next ``##``
    or ``###`` heading; the model answers after nbgrader's ``### BEGIN SOLUTION`` are a
    section of their own, the teacher's, left out of student copies) of more than
    ``section_words`` words, or a paragraph or list item of more than ``paragraph_words``."""
    found, title, words = [], "(before the first section)", 0

    def close():
        if words > section_words:
            found.append(f"section '{title}': {words} words (at most {section_words})")

    for cell in nb.cells:
        if cell.cell_type != "markdown":
            continue
        for para in _paragraphs(cell.source):
            first = para.strip().splitlines()[0] if para.strip() else ""
            heading = re.match(r"^#{2,3}\s+(.+)$", first)
            if "END SOLUTION" in first:  # nbgrader's marker, not text
                continue
            if heading:
                close()
                words = 0
                title = ("model answers" if "BEGIN SOLUTION" in first
                         else heading.group(1).strip()[:60])
                para = para.replace(first, "", 1)
            n = len(_WORD.findall(para))
            words += n
            if n > paragraph_words:
                start = " ".join(para.split()[:8])
                found.append(f"section '{title}': a paragraph of {n} words ('{start} ...')")
    close()
    return found


# -- figures and pictures that fit the page ---------------------------------------------------
HANDOUT_WIDTH = 1000  # px: the widest picture a handout (or JupyterLab's output column) shows
FIGURE_WIDTH = 700    # px: plotly's default width, the width of the figures' PNG copies
_CHAR = 0.55          # a character's width in font sizes (Open Sans / Arial, on average)
_TAGS = re.compile(r"<[^>]+>")


def _text_width(text: str, size: float) -> float:
    """Estimated width in px of the longest line of plotly text (``<br>`` breaks lines;
    ``<sup>``/``<sub>`` lines are set smaller)."""
    widths = []
    for line in re.split(r"<br\s*/?>", text or ""):
        scale = 0.7 if re.search(r"<su[pb]>", line) else 1.0
        widths.append(len(_TAGS.sub("", line)) * _CHAR * size * scale)
    return max(widths, default=0.0)


def layout_problems(fig: dict, width: int = FIGURE_WIDTH) -> list:
    """What collides in a plotly figure (its JSON: ``data`` and ``layout``) shown ``width``
    px wide, from its layout alone: a title longer than the figure; titles of side-by-side
    subplots (annotations above the plot area) that run into each other; a figure title
    and subplot titles or a legend above the plot that do not fit in the top margin
    together; a subplot title past the figure's edge. Text sizes are estimates
    (:data:`_CHAR`), so the checks keep a margin."""
    lay = fig.get("layout", {})
    W = lay.get("width") or width
    margin = {"l": 80, "r": 80, "t": 100, "b": 80, **lay.get("margin", {})}
    base = lay.get("font", {}).get("size", 12)
    title = lay.get("title", {})
    title = title if isinstance(title, dict) else {"text": title}
    found = []
    title_px = 0.0
    if title.get("text"):
        size = title.get("font", {}).get("size", base * 1.4)
        lines = len(re.split(r"<br\s*/?>", title["text"]))
        title_px = size * 1.3 * lines
        if _text_width(title["text"], size) > W - 10:
            found.append(f"title too long for {W} px: {_TAGS.sub('', title['text'])[:60]!r}")
    plot_w = W - margin["l"] - margin["r"]
    above = [a for a in lay.get("annotations", []) if a.get("yref", "paper") == "paper"
             and a.get("xref", "paper") == "paper" and a.get("y", 0) >= 1 and a.get("text")]
    spans = []
    for a in above:
        size = a.get("font", {}).get("size", base)
        half = _text_width(a["text"], size) / 2
        x = margin["l"] + a.get("x", 0.5) * plot_w
        spans.append((x - half, x + half, round(a.get("y", 1), 2), a["text"]))
    spans.sort()
    for left, right, _, text in spans:
        if left < 0 or right > W:
            found.append(f"subplot title runs off the figure: {_TAGS.sub('', text)[:40]!r}")
    for (l0, r0, y0, t0), (l1, r1, y1, t1) in zip(spans, spans[1:]):
        if y0 == y1 and r0 > l1:
            found.append(f"subplot titles overlap: {t0[:30]!r} and {t1[:30]!r}")
    top = title_px + 6
    if above:
        top += max(a.get("font", {}).get("size", base) for a in above) * 1.5
    legend = lay.get("legend", {})
    if legend.get("y", 0) > 1 and lay.get("showlegend", True) is not False:
        top += base * 1.6
    if title_px and margin["t"] < top:
        found.append(f"top margin {margin['t']} px < {top:.0f} px for the title and what sits "
                     f"above the plot: {_TAGS.sub('', title['text'])[:40]!r}")
    return found


def figure_problems(nb, width: int = FIGURE_WIDTH) -> list:
    """:func:`layout_problems` of every plotly figure a notebook holds, with its cell."""
    return [f"cell {k}: {p}" for k, cell in enumerate(nb.cells) if cell.cell_type == "code"
            for out in cell.get("outputs", [])
            if "application/vnd.plotly.v1+json" in out.get("data", {})
            for p in layout_problems(out["data"]["application/vnd.plotly.v1+json"], width)]


def wide_pictures(html: str, limit: int = HANDOUT_WIDTH) -> list:
    """The inline pictures of an exported handout wider than ``limit`` px: PNGs by their
    header, SVGs by their width (points are 4/3 px)."""
    import base64
    import struct

    found = []
    for data in re.findall(r'src="data:image/png;base64,([A-Za-z0-9+/=]{40,}?)"', html):
        w = struct.unpack(">I", base64.b64decode(data[:32])[16:20])[0]
        if w > limit:
            found.append(f"a PNG {w} px wide")
    for value, unit in re.findall(r'<svg[^>]*?\swidth="([\d.]+)(pt|px)?"', html):
        w = float(value) * (4 / 3 if unit == "pt" else 1)
        if w > limit:
            found.append(f"an SVG {w:.0f} px wide")
    return found


TEACHER_NOTE = "<small><i>Teacher's answer</i></small>"


def teacher_notes(nb):
    """The teacher's handout shows a model answer under a small "Teacher's answer" note: the
    nbgrader markers of markdown cells (``### BEGIN SOLUTION``, a large heading in HTML)
    become that note, or go (``### END SOLUTION``); in code cells the marker comments become
    one short comment, or go. Returns ``nb``, changed in place."""
    for cell in nb.cells:
        if cell.cell_type not in ("markdown", "code"):
            continue
        lines = []
        for line in cell.source.splitlines():
            marker = line.strip().lstrip("#").strip()
            if marker == "BEGIN SOLUTION":
                lines.append(TEACHER_NOTE if cell.cell_type == "markdown" else
                             line[:len(line) - len(line.lstrip())] + "# the teacher's answer:")
            elif marker != "END SOLUTION":
                lines.append(line)
        cell.source = "\n".join(lines)
    return nb


# $$display$$ or $inline$ maths (not an escaped or doubled dollar, no space inside the ends)
_MATH = re.compile(r"\$\$(.+?)\$\$|(?<![\\$])\$(?![\s$])([^$\n]+?)(?<!\s)\$", re.S)
_MATHJAX = re.compile(r"<!-- Load mathjax -->.*?<!-- End of mathjax configuration -->", re.S)
# scripts the template loads from a CDN: require.js, and mermaid (for diagrams these
# notebooks do not have); a handout must open offline with nothing missing
_CDN_SCRIPTS = re.compile(r"<script[^>]*>(?:(?!</script>).)*?cdnjs(?:(?!</script>).)*?</script>"
                          r"|<script[^>]*cdnjs[^>]*>\s*</script>", re.S)
_TEX_FIXES = {r"\arg": r"\operatorname{arg}"}  # what latex2mathml does not know


def _mathml(tex: str, display: bool) -> str:
    from latex2mathml.converter import convert

    for old, new in _TEX_FIXES.items():
        tex = tex.replace(old, new)
    return convert(tex.strip(), display="block" if display else "inline")


def offline_math(text: str, found: dict) -> str:
    """The TeX of a markdown cell as placeholders, its MathML in ``found`` (placeholder ->
    MathML), put back into the exported HTML by :func:`export`: browsers render MathML
    themselves, so a handout opened offline shows its maths (MathJax came from a CDN). The
    markdown renderer never sees the MathML, whose tags it would take apart. Code spans are
    left as they are; TeX that does not convert stays TeX."""
    def sub(m):
        display = m.group(1) is not None
        try:
            mathml = _mathml(m.group(1) if display else m.group(2), display)
        except Exception:  # noqa: BLE001  (an unknown command: keep the TeX readable)
            return m.group(0)
        key = f"NASTUTORIALMATH{len(found):05d}X"
        found[key] = mathml
        return key

    parts = re.split(r"(`[^`\n]*`)", text)
    return "".join(p if p.startswith("`") else _MATH.sub(sub, p) for p in parts)


def export(notebook: Path, out_dir: Path) -> Path:
    """``notebook`` as one self-contained HTML file in ``out_dir`` (images inline)."""
    import nbformat
    from nbconvert import HTMLExporter

    exporter = HTMLExporter(embed_images=True)
    nb, maths = teacher_notes(nbformat.read(notebook, 4)), {}
    for cell in nb.cells:
        if cell.cell_type == "markdown":
            cell.source = offline_math(cell.source, maths)
    body, _ = exporter.from_notebook_node(nb)
    body = _CDN_SCRIPTS.sub("", _MATHJAX.sub("", body))  # the maths is MathML now
    for key, mathml in maths.items():
        body = body.replace(key, mathml)
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / (notebook.stem + ".html")
    path.write_text(body, encoding="utf-8")
    return path


_COUNT_JS = """
<script>
window.addEventListener('load', () => {
  const outs = document.querySelectorAll('.jp-OutputArea-output, .output_area');
  let imgs = 0, broken = 0, svgs = 0;
  outs.forEach(o => {
    o.querySelectorAll('img').forEach(i => { if (i.naturalWidth > 0) imgs++; else broken++; });
    svgs += o.querySelectorAll(':scope > svg, .jp-RenderedSVG svg, .jp-RenderedImage svg').length;
  });
  const p = document.createElement('pre');
  p.id = 'nas-tutorial-count';
  p.textContent = JSON.stringify({images: imgs, broken: broken, svg: svgs});
  document.body.appendChild(p);
});
</script>
"""


def browser() -> str | None:
    return chromium()


def rendered(html: Path, chromium: str, timeout: int = 120) -> dict:
    """Open ``html`` in headless Chromium and count the pictures it rendered in outputs."""
    probe = html.with_suffix(".probe.html")
    probe.write_text(html.read_text(encoding="utf-8").replace("</body>", _COUNT_JS + "</body>"),
                     encoding="utf-8")
    try:
        dom = subprocess.run(
            [chromium, "--headless", "--no-sandbox", "--disable-gpu", "--virtual-time-budget=5000",
             "--dump-dom", probe.resolve().as_uri()],
            capture_output=True, text=True, timeout=timeout).stdout
    finally:
        probe.unlink(missing_ok=True)
    m = re.search(r'<pre id="nas-tutorial-count">(.*?)</pre>', dom)
    if not m:
        raise RuntimeError(f"Chromium rendered nothing for {html.name}")
    return json.loads(m.group(1).replace("&quot;", '"'))


def write_handouts(notebooks="notebooks", out="handouts", check: bool = True) -> int:
    """Export every notebook in ``notebooks`` to ``out`` and, with ``check`` and a
    Chromium, count what it renders against the figures the notebook holds; prints a line
    per notebook and returns the number of notebooks with a problem
    (``nas-tutorial handouts``)."""
    import nbformat

    chromium = browser() if check else None
    if check and chromium is None:
        print("handouts: no Chromium to check the exports (apt-get install chromium); "
              "exporting only", file=sys.stderr)
    bad = 0
    for nb_path in sorted(Path(notebooks).glob("*.ipynb")):
        nb = nbformat.read(nb_path, 4)
        html = export(nb_path, Path(out))
        expected, issues = figure_outputs(nb), problems(nb)
        line = f"{nb_path.name}: {expected} figures and drawings"
        if chromium:
            try:
                seen = rendered(html, chromium)
            except (RuntimeError, subprocess.TimeoutExpired) as e:
                bad += 1
                print(f"{line}; Chromium could not render it ({type(e).__name__}) -> {html}")
                continue
            shown = seen["images"] + seen["svg"]
            line += f", Chromium rendered {shown} ({seen['images']} images, {seen['svg']} SVG)"
            if seen["broken"] or shown < expected:
                bad += 1
                line += f"  MISSING {expected - shown}, broken {seen['broken']}"
        if issues:
            bad += 1
            line += "; " + "; ".join(issues[:3])
        print(f"{line} -> {html}")
    return bad
