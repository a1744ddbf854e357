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


TEACHER_NOTE = "<small><i>Teacher's answer</i></small>"


def teacher_notes(nb):
    """The teacher's handout shows a model answer under a small "Teacher's answer" note: the
    nbgrader markers of markdown cells (``### BEGIN SOLUTION``, a large heading in HTML)
    become that note, or go (``### END SOLUTION``). Returns ``nb``, changed in place."""
    for cell in nb.cells:
        if cell.cell_type == "markdown":
            lines = []
            for line in cell.source.splitlines():
                if line.strip() == "### BEGIN SOLUTION":
                    lines.append(TEACHER_NOTE)
                elif line.strip() != "### END SOLUTION":
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
