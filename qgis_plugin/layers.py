"""Core results as styled QGIS layers, in one layer group per run, in the scene's CRS.

Runs in the GUI thread (``QgsTask.finished``); the files were written by the
core in the worker thread, so this module only loads and styles them.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Sequence

from qgis.core import (QgsCategorizedSymbolRenderer, QgsColorRampLegendNodeSettings, QgsColorRampShader,
                       QgsCoordinateReferenceSystem, QgsFeatureRequest, QgsFillSymbol, QgsGradientColorRamp, QgsGraduatedSymbolRenderer,
                       QgsLayerTreeGroup, QgsPalLayerSettings, QgsProject, QgsRasterBandStats, QgsRasterLayer,
                       QgsRasterShader, QgsRendererCategory, QgsRendererRange, QgsSingleBandPseudoColorRenderer,
                       QgsSingleSymbolRenderer, QgsStyle, QgsTextFormat, QgsTextBufferSettings, QgsVectorLayer,
                       QgsVectorLayerSimpleLabeling)
from qgis.PyQt.QtGui import QColor

# The colours of the core's class rasters (rsclip_geo.outputs.writers.PALETTE; a test keeps them equal), so
# vector and raster outputs agree. Copied: the QGIS process never imports the core (see runs.py).
PALETTE = [
    (0, 114, 178), (230, 159, 0), (0, 158, 115), (213, 94, 0), (204, 121, 167), (86, 180, 233),
    (240, 228, 66), (0, 0, 0), (31, 119, 180), (255, 127, 14), (44, 160, 44), (214, 39, 40),
    (148, 103, 189), (140, 86, 75), (227, 119, 194), (127, 127, 127), (188, 189, 34), (23, 190, 207),
    (174, 199, 232), (255, 187, 120), (152, 223, 138), (255, 152, 150), (197, 176, 213), (196, 156, 148),
]
UNKNOWN_COLOUR = (190, 190, 190)
OUTPUT_PROPERTY = "rsclip_geo/output"  # marks our result layers: never taken as the scene to process


class LayerError(RuntimeError):
    """An output file could not be loaded as a layer."""


# ---- groups and loading -------------------------------------------------------------
def run_group(name: str, project: QgsProject | None = None) -> QgsLayerTreeGroup:
    """A new group at the top of the layer tree (a run never reuses an older run's group); the groups of
    older runs are collapsed, so the newest results are the ones in view."""
    root = (project or QgsProject.instance()).layerTreeRoot()
    for older in root.children():
        if isinstance(older, QgsLayerTreeGroup) and older.customProperty(OUTPUT_PROPERTY):
            older.setExpanded(False)
    group = root.insertGroup(0, name)
    group.setCustomProperty(OUTPUT_PROPERTY, True)
    group.setExpanded(True)
    return group


def show_expanded(group: QgsLayerTreeGroup, view=None) -> None:
    """The run's group and its layers open, in the node state and in ``view`` (a QgsLayerTreeView): the view
    keeps its own expanded state for rows it has shown before, which can leave a new group collapsed."""
    group.setExpanded(True)
    for node in group.findLayers():
        node.setExpanded(True)
    if view is not None and view.layerTreeModel() is not None:
        # the view's own index (QGIS >= 3.18 puts a proxy model between the view and the layer tree model)
        index = view.node2index(group) if hasattr(view, "node2index") else view.layerTreeModel().node2index(group)
        if index.isValid():
            view.setExpanded(index, True)
            view.scrollTo(index)


def _add(layer, group: QgsLayerTreeGroup, project: QgsProject | None = None) -> str:
    layer.setCustomProperty(OUTPUT_PROPERTY, True)
    (project or QgsProject.instance()).addMapLayer(layer, False)
    group.addLayer(layer)
    return layer.id()


def _with_crs(layer, crs_wkt: str):
    if crs_wkt:
        crs = QgsCoordinateReferenceSystem.fromWkt(crs_wkt)
        if crs.isValid() and layer.crs() != crs:
            layer.setCrs(crs)
    return layer


def load_vector(path: str | Path, name: str, crs_wkt: str = "") -> QgsVectorLayer:
    layer = QgsVectorLayer(str(path), name, "ogr")
    if not layer.isValid():
        raise LayerError(f"{path}: QGIS cannot open this vector file")
    return _with_crs(layer, crs_wkt)


def load_raster(path: str | Path, name: str, crs_wkt: str = "") -> QgsRasterLayer:
    layer = QgsRasterLayer(str(path), name, "gdal")
    if not layer.isValid():
        raise LayerError(f"{path}: QGIS cannot open this raster file")
    return _with_crs(layer, crs_wkt)


# ---- styles ---------------------------------------------------------------------------
def _ramp(name: str, fallback=((0, 0, 4), (252, 255, 164))):
    ramp = QgsStyle.defaultStyle().colorRamp(name)
    return ramp or QgsGradientColorRamp(QColor(*fallback[0]), QColor(*fallback[1]))


def style_scores(layer: QgsRasterLayer, lo: float | None = None, hi: float | None = None,
                 cut: float | None = None, ramp_name: str = "Inferno", opacity: float = 0.85) -> None:
    """Pseudocolour from ``cut`` to ``hi`` ([lo, hi] default: the band's min/max). Values below ``cut`` are
    fully transparent (default: mean + half a standard deviation, so about the best third of the tiles
    shows) and opacity rises with the score, so the scene stays visible under the colours. The legend is
    one continuous bar labelled at its two ends (no rows of unlabelled colours)."""
    stats = layer.dataProvider().bandStatistics(1, QgsRasterBandStats.All)
    lo = stats.minimumValue if lo is None else lo
    hi = stats.maximumValue if hi is None else hi
    if not (math.isfinite(lo) and math.isfinite(hi)) or hi <= lo:
        lo, hi = (0.0, 1.0) if not math.isfinite(lo) else (lo, lo + 1e-6)
    if cut is None:
        cut = stats.mean + 0.5 * stats.stdDev if math.isfinite(stats.mean) else lo
    cut = min(max(cut, lo), lo + 0.95 * (hi - lo))
    ramp = _ramp(ramp_name)
    clear = QColor(ramp.color(0.0))
    clear.setAlpha(0)
    items = [QgsColorRampShader.ColorRampItem(cut, clear, f"{cut:.3f}")]  # lower values: this colour too
    steps = 8
    for i in range(1, steps + 1):
        f = i / steps
        colour = QColor(ramp.color(0.25 + 0.75 * f))
        colour.setAlpha(int(110 + 145 * f))
        value = cut + f * (hi - cut)
        items.append(QgsColorRampShader.ColorRampItem(value, colour, f"{value:.3f}"))
    shader_fn = QgsColorRampShader(cut, hi)
    shader_fn.setColorRampType(QgsColorRampShader.Interpolated)
    shader_fn.setClip(False)
    shader_fn.setColorRampItemList(items)
    # the legend: one continuous bar from the cut (below it: transparent) to the best score, two labels
    legend = QgsColorRampLegendNodeSettings()
    legend.setUseContinuousLegend(True)
    legend.setMinimumLabel(f"{cut:.3f} (lower: not drawn)")
    legend.setMaximumLabel(f"{hi:.3f} (best)")
    shader_fn.setLegendSettings(legend)
    shader = QgsRasterShader()
    shader.setRasterShaderFunction(shader_fn)
    renderer = QgsSingleBandPseudoColorRenderer(layer.dataProvider(), 1, shader)
    renderer.setClassificationMin(cut)
    renderer.setClassificationMax(hi)
    renderer.setOpacity(opacity)
    layer.setRenderer(renderer)
    layer.triggerRepaint()


def style_hits(layer: QgsVectorLayer, colour=(255, 0, 170)) -> None:
    """Outlines (the scene stays visible), best hit drawn last, labelled '#rank score'."""
    style_labelled_outlines(layer, colour, fill_alpha=0, width_mm=0.7, order_by="rank", ascending=False,
                            label="concat('#', \"rank\", '  ', format_number(\"score\", 3))", halo=(255, 255, 255))


def style_labelled_outlines(layer: QgsVectorLayer, colour, fill_alpha: int, width_mm: float, order_by: str,
                            ascending: bool, label: str, halo) -> None:
    """Polygons outlined in `colour` (fill at `fill_alpha`), drawn in `order_by` order so the best come last,
    labelled with the expression `label` in `colour` on a `halo` buffer: hits and found objects alike."""
    rgb = ",".join(map(str, colour))
    symbol = QgsFillSymbol.createSimple({"color": f"{rgb},{fill_alpha}", "outline_color": rgb,
                                         "outline_width": str(width_mm), "outline_width_unit": "MM"})
    renderer = QgsSingleSymbolRenderer(symbol)
    renderer.setOrderBy(QgsFeatureRequest.OrderBy([QgsFeatureRequest.OrderByClause(order_by, ascending)]))
    renderer.setOrderByEnabled(True)
    layer.setRenderer(renderer)
    settings = QgsPalLayerSettings()
    settings.fieldName = label
    settings.isExpression = True
    settings.placement = QgsPalLayerSettings.OverPoint
    text = QgsTextFormat()
    text.setColor(QColor(*colour))
    text.setSize(9)
    buffer = QgsTextBufferSettings()
    buffer.setEnabled(True)
    buffer.setColor(QColor(*halo))
    text.setBuffer(buffer)
    settings.setFormat(text)
    layer.setLabeling(QgsVectorLayerSimpleLabeling(settings))
    layer.setLabelsEnabled(True)
    layer.triggerRepaint()


def _fill(rgb, alpha: int = 150):
    return QgsFillSymbol.createSimple({"color": f"{rgb[0]},{rgb[1]},{rgb[2]},{alpha}",
                                       "outline_color": f"{rgb[0]},{rgb[1]},{rgb[2]},230", "outline_width": "0.2"})


def style_classes(layer: QgsVectorLayer, labels: Sequence[str], field: str = "label") -> None:
    """One category per label, in the order given (the legend lists them), in the colours of the
    core's class rasters, so vector and raster outputs agree."""
    categories = []
    for i, name in enumerate(labels):
        rgb = UNKNOWN_COLOUR if name == "unknown" else PALETTE[i % len(PALETTE)]
        categories.append(QgsRendererCategory(name, _fill(rgb), name))
    layer.setRenderer(QgsCategorizedSymbolRenderer(field, categories))
    layer.triggerRepaint()


def style_counts(layer: QgsVectorLayer, max_count: int, field: str = "count") -> None:
    """Graduated fills, one class per count up to 12, else 8 equal classes over 1..max_count."""
    ramp = _ramp("YlOrRd", ((255, 255, 178), (189, 0, 38)))
    n = max_count if max_count <= 12 else 8
    edges = [0.5 + i * max_count / n for i in range(n + 1)]
    ranges = []
    for i in range(n):
        lo, hi = edges[i], edges[i + 1]
        colour = ramp.color(i / max(1, n - 1))
        label = f"{math.ceil(lo)}" if n == max_count else f"{math.ceil(lo)}-{math.floor(hi)}"
        ranges.append(QgsRendererRange(lo, hi, _fill((colour.red(), colour.green(), colour.blue()), 170), label))
    renderer = QgsGraduatedSymbolRenderer(field, ranges)
    layer.setRenderer(renderer)
    layer.triggerRepaint()


# ---- one function per action ------------------------------------------------------------
def add_result(result, project: QgsProject | None = None, view=None) -> list[str]:
    """Layers for a finished run (tasks.RunResult) in a new, expanded group; returns the layer ids."""
    adders = {"search": _search, "classify": _classify, "heatmap": _heatmap, "count": _count}
    if result.action not in adders:
        return []
    group = run_group(result.group, project)
    ids = adders[result.action](result, group, result.params.crs_wkt, project)
    show_expanded(group, view)
    return ids


def _search(result, group, crs, project):
    query = getattr(result.params, "query", "")
    hits = load_vector(result.outputs["hits"], f"hits: {query}" if query else "hits", crs)
    style_hits(hits)
    scores = load_raster(result.outputs["scores"], "tile scores", crs)
    style_scores(scores)
    return [_add(hits, group, project), _add(scores, group, project)]


def _classify(result, group, crs, project):
    layer = load_vector(result.outputs["labels"], "labels", crs)
    style_classes(layer, result.info["labels"])
    return [_add(layer, group, project)]


def _heatmap(result, group, crs, project):
    layer = load_raster(result.outputs["heatmap"], "heatmap", crs)
    style_scores(layer, 0.0, 1.0, cut=0.4)
    return [_add(layer, group, project)]


def _count(result, group, crs, project):
    layer = load_vector(result.outputs["counts"], f"{result.params.object_name} count", crs)
    style_counts(layer, result.info["max_count"])
    return [_add(layer, group, project)]
