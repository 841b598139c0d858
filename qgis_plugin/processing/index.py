"""Processing: encode every tile of a scene once into a GeoParquet index (reused by search, heatmap, count)."""

from __future__ import annotations

from qgis.core import QgsProcessingOutputNumber, QgsProcessingParameterBoolean, QgsProcessingParameterFileDestination

from ..runs import IndexParams
from .base import RsclipAlgorithm


class BuildIndexAlgorithm(RsclipAlgorithm):
    """Encodes every valid tile of the scene once and stores the embeddings as GeoParquet. Without an output file the
    index goes beside the scene (SCENE.rsclip-index.parquet, or the user cache when that folder is read-only),
    where search, heatmap and count find and reuse it."""

    REBUILD, N_TILES = "REBUILD", "N_TILES"
    algorithm_name, display_name = "buildindex", "Build index"
    action, params_class = "index", IndexParams

    def add_own_parameters(self) -> None:
        self.addParameter(QgsProcessingParameterBoolean(self.REBUILD, "Rebuild even if a fresh index exists",
                                                        defaultValue=False))

    def add_outputs(self) -> None:
        self.addParameter(QgsProcessingParameterFileDestination(
            self.OUTPUT, "Index file (empty: beside the scene)", "GeoParquet (*.parquet)", optional=True,
            createByDefault=False))
        self.addOutput(QgsProcessingOutputNumber(self.N_TILES, "Tiles indexed"))

    def processAlgorithm(self, parameters, context, feedback):
        _, result = self.run_action(parameters, context, feedback,
                                    rebuild=self.parameterAsBool(parameters, self.REBUILD, context),
                                    output=self.parameterAsFileOutput(parameters, self.OUTPUT, context) or "")
        return {self.OUTPUT: result["outputs"]["index"], self.N_TILES: result["info"]["n_tiles"]}
