"""Turn an Altair chart into metadata entries: a PNG the Dagster UI shows, and the Vega-Lite spec
(no Dagster import; the defs wrap the values in dg.MetadataValue.md / .json)."""

import base64
import json
import struct
import zlib
from typing import Any

import altair as alt
import vl_convert as vlc

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
    return recompress_png(vlc.vegalite_to_png(vl_spec=spec, vl_version=VL_VERSION, scale=scale))


_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def recompress_png(png: bytes) -> bytes:
    """The same image with its pixel data deflated at level 9.

    vl-convert writes PNGs with its fastest compression; re-deflating shrinks a chart about
    tenfold (e.g. 320 kB to 30 kB), which matters because every poll stores a new PNG in
    Dagster's event log. Pixels, filters and the other chunks are kept byte for byte.
    """
    if not png.startswith(_PNG_SIGNATURE):
        raise ValueError("not a PNG image")
    chunks: list[tuple[bytes, bytes]] = []
    offset = len(_PNG_SIGNATURE)
    while offset < len(png):
        (length,) = struct.unpack(">I", png[offset : offset + 4])
        kind = png[offset + 4 : offset + 8]
        chunks.append((kind, png[offset + 8 : offset + 8 + length]))
        offset += 12 + length
    pixels = zlib.decompress(b"".join(data for kind, data in chunks if kind == b"IDAT"))
    out = [_PNG_SIGNATURE]
    wrote_pixels = False
    for kind, data in chunks:
        if kind == b"IDAT":
            if not wrote_pixels:
                out.append(_png_chunk(b"IDAT", zlib.compress(pixels, 9)))
                wrote_pixels = True
            continue
        out.append(_png_chunk(kind, data))
    return b"".join(out)


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
