"""The rsclip-geo Processing provider (Toolbox > rsclip-geo)."""

from __future__ import annotations

from qgis.core import QgsProcessingProvider

from ..icon import icon


class RsclipProvider(QgsProcessingProvider):
    def id(self) -> str:
        return "rsclipgeo"

    def name(self) -> str:
        return "rsclip-geo"

    def longName(self) -> str:
        return "rsclip-geo: search and label imagery with words"

    def icon(self):
        return icon()

    def loadAlgorithms(self) -> None:
        from .audit import AuditLabelsAlgorithm
        from .classify import ClassifyTilesAlgorithm
        from .count import CountObjectsAlgorithm
        from .heatmap import HeatmapAlgorithm
        from .index import BuildIndexAlgorithm
        from .search import SearchAlgorithm
        from .segment import FindObjectsAlgorithm

        for alg in (ClassifyTilesAlgorithm, SearchAlgorithm, HeatmapAlgorithm, CountObjectsAlgorithm,
                    BuildIndexAlgorithm, AuditLabelsAlgorithm, FindObjectsAlgorithm):
            self.addAlgorithm(alg())
