"""Turn an Altair chart into metadata entries: a PNG the Dagster UI shows, and the Vega-Lite spec
(no Dagster import; the defs wrap the values in dg.MetadataValue.md / .json)."""

import base64
import io
import json
from typing import Any

import altair as alt
import vl_convert as vlc
from PIL import Image

# Dagster stores metadata in its event log; large entries slow the UI down, so each stays below.
MAX_ENTRY_BYTES = 1_000_000
# vl-convert bundles several Vega-Lite versions; use the one Altair writes its specs for.
VL_VERSION = "v" + "_".join(alt.SCHEMA_VERSION.lstrip("v").split(".")[:2])
# Tried in order until the markdown fits the budget (1.0 = the chart's own pixel size).
_SCALES = (1.0, 0.75, 0.5)


def chart_spec(chart: alt.TopLevelMixin) -> dict[str, Any]:
    """The Vega-Lite spec with its data inlined, ready for the Vega editor."""
    return chart.to_dict()


def chart_png(spec: dict[str, Any], scale: float = 1.0) -> bytes:
    return palette_png(vlc.vegalite_to_png(vl_spec=spec, vl_version=VL_VERSION, scale=scale))


# Colours in a chart's palette. A chart is a few flat colours plus anti-aliased text and edges;
# 64 keep them indistinguishable from the original by eye (checked on every chart the pipeline
# draws) while the image stores one byte a pixel instead of four.
PALETTE_COLOURS = 64


def palette_png(png: bytes) -> bytes:
    """The same chart as an 8-bit palette PNG, deflated at level 9.

    vl-convert writes 32-bit RGBA PNGs with its fastest compression. Every chart is stored in
    Dagster's event log (twice on SQLite: the run's file and the asset index), and a month of
    redraws adds up: as a palette image a chart is ~2.5x smaller than the RGBA image deflated
    at level 9 (e.g. 48 kB to 18 kB), and ~25x smaller than vl-convert's output. Transparent
    pixels are laid on white first: the UI shows the chart on white either way.
    """
    try:
        image = Image.open(io.BytesIO(png))
        image.load()
    except (OSError, SyntaxError) as exc:  # Pillow's errors for data that is not an image
        raise ValueError(f"not a PNG image: {exc}") from exc
    if image.format != "PNG":
        raise ValueError(f"not a PNG image: {image.format}")
    rgba = image.convert("RGBA")
    on_white = Image.alpha_composite(Image.new("RGBA", rgba.size, "white"), rgba).convert("RGB")
    palette = on_white.quantize(colors=PALETTE_COLOURS, method=Image.Quantize.MEDIANCUT)
    out = io.BytesIO()
    palette.save(out, format="PNG", optimize=True)
    return out.getvalue()


def png_markdown(png: bytes, alt_text: str) -> str:
    encoded = base64.b64encode(png).decode("ascii")
    # Markdown image syntax: the UI's markdown renderer shows data: images, raw <img> is escaped.
    safe_alt = alt_text.replace("[", "(").replace("]", ")")
    return f"![{safe_alt}](data:image/png;base64,{encoded})"


def chart_entries(
    name: str, chart: alt.TopLevelMixin, alt_text: str | None = None
) -> dict[str, Any]:
    """{name: markdown with the chart as an embedded PNG, name + "_spec": the Vega-Lite dict}.

    Each entry stays under MAX_ENTRY_BYTES: the PNG is re-rendered smaller if needed and an
    oversized spec is replaced by a short note, so a big chart never fails a materialisation.
    """
    spec = chart_spec(chart)
    text = alt_text or _title_of(spec) or name
    markdown = ""
    for scale in _SCALES:
        markdown = png_markdown(chart_png(spec, scale), text)
        if len(markdown.encode("utf-8")) < MAX_ENTRY_BYTES:
            break
    else:
        markdown = f"Chart *{text}* omitted: its PNG is larger than {MAX_ENTRY_BYTES} bytes."
    spec_bytes = len(json.dumps(spec).encode("utf-8"))
    spec_value: dict[str, Any] = spec
    if spec_bytes >= MAX_ENTRY_BYTES:
        spec_value = {
            "omitted": f"the Vega-Lite spec is {spec_bytes} bytes, over {MAX_ENTRY_BYTES}"
        }
    return {name: markdown, f"{name}_spec": spec_value}


def _title_of(spec: dict[str, Any]) -> str | None:
    for candidate in (spec, *(spec.get("vconcat") or [])):
        title = candidate.get("title")
        if isinstance(title, dict):
            title = title.get("text")
        if isinstance(title, str):
            return title
    return None
