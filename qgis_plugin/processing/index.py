"""Processing: encode every tile of a scene once into a GeoParquet index (reused by search, heatmap, count)."""

from __future__ import annotations

from qgis.core import QgsProcessingOutputNumber, QgsProcessingParameterBoolean, QgsProcessingParameterFileDestination

from ..runs import IndexParams
from .base import RsclipAlgorithm


class BuildIndexAlgorithm(RsclipAlgorithm):
    REBUILD, N_TILES = "REBUILD", "N_TILES"

    def name(self) -> str:
        return "buildindex"

    def displayName(self) -> str:
        return "Build index"

    def shortHelpString(self) -> str:
        return ("Encodes every valid tile of the scene once and stores the embeddings as GeoParquet. Without an "
                "output file the index goes beside the scene (SCENE.rsclip-index.parquet, or the user cache when "
                "that folder is read-only), where search, heatmap and count find and reuse it.")

    def initAlgorithm(self, config=None):
        self.add_scene_parameters()
        self.addParameter(QgsProcessingParameterBoolean(self.REBUILD, "Rebuild even if a fresh index exists",
                                                        defaultValue=False))
        self.add_model_parameters()
        self.addParameter(QgsProcessingParameterFileDestination(
            self.OUTPUT, "Index file (empty: beside the scene)", "GeoParquet (*.parquet)", optional=True,
            createByDefault=False))
        self.addOutput(QgsProcessingOutputNumber(self.N_TILES, "Tiles indexed"))

    def processAlgorithm(self, parameters, context, feedback):
        params = self.run_params(IndexParams, parameters, context,
                                 rebuild=self.parameterAsBool(parameters, self.REBUILD, context),
                                 output=self.parameterAsFileOutput(parameters, self.OUTPUT, context) or "")
        result = self.run_worker("index", params, feedback)
        return {self.OUTPUT: result["outputs"]["index"], self.N_TILES: result["info"]["n_tiles"]}
