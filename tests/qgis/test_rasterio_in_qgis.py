"""The key risk: pip's rasterio/pyproj/onnxruntime (own GDAL 3.10 + PROJ 9.5) in one process with QGIS
(Debian GDAL 3.6, PROJ 9.1). QGIS's CRS handling and both GDALs must keep working, also in a task.

This holds in a Python process that imports qgis (its libraries are loaded RTLD_LOCAL). Inside the
QGIS desktop binary it does not: there the wheels' GDAL/GEOS symbols resolve to QGIS's own copies
(see qgis_plugin/runs.py), which is why the plugin runs the core in a worker process."""

from __future__ import annotations

import time

import pytest


def test_wheels_and_qgis_share_the_process(qgis_app, scene_path):
    import onnxruntime
    import pyproj
    import rasterio
    from osgeo import gdal
    from qgis.core import (QgsCoordinateReferenceSystem, QgsCoordinateTransform, QgsPointXY, QgsProject,
                           QgsRasterLayer)

    scene = scene_path  # a copy: QGIS writes statistics (.aux.xml) beside the rasters it opens
    assert "CPUExecutionProvider" in onnxruntime.get_available_providers()
    utm = QgsCoordinateReferenceSystem("EPSG:32618")
    assert utm.isValid()
    xf = QgsCoordinateTransform(utm, QgsCoordinateReferenceSystem("EPSG:4326"), QgsProject.instance())
    p = xf.transform(QgsPointXY(500000, 4500000))
    assert p.x() == pytest.approx(-75.0) and p.y() == pytest.approx(40.6508565, abs=1e-6)
    lon, lat = pyproj.Transformer.from_crs(32618, 4326, always_xy=True).transform(500000, 4500000)
    assert (lon, lat) == pytest.approx((p.x(), p.y()), abs=1e-9)
    layer = QgsRasterLayer(str(scene), "scene", "gdal")  # QGIS's GDAL
    with rasterio.open(scene) as ds:  # the wheel's GDAL
        assert ds.crs.to_epsg() == 32618 == int(layer.crs().authid().split(":")[1])
        assert (ds.width, ds.height) == (layer.width(), layer.height()) == (515, 403)
        assert ds.bounds.left == pytest.approx(layer.extent().xMinimum())
        first = ds.read(1)
    ds2 = gdal.Open(str(scene))  # osgeo (QGIS's GDAL) after rasterio
    assert (ds2.GetRasterBand(1).ReadAsArray() == first).all()


def test_rasterio_reads_in_a_qgs_task(qgis_app, scene_path):
    import rasterio
    from qgis.core import QgsApplication, QgsCoordinateReferenceSystem, QgsTask

    scene = scene_path
    out = {}

    def work(task):
        with rasterio.open(scene) as ds:
            mean = float(ds.read(1).mean())
        crs = QgsCoordinateReferenceSystem("EPSG:32618")  # QGIS's PROJ, from a worker thread
        return mean, crs.isValid()

    task = QgsTask.fromFunction("rasterio in a task", work, on_finished=lambda exc, res=None: out.update(e=exc, r=res))
    QgsApplication.taskManager().addTask(task)
    deadline = time.time() + 30
    while not out and time.time() < deadline:
        QgsApplication.processEvents()
        time.sleep(0.01)
    assert out.get("e") is None and out["r"][1] is True
    with rasterio.open(scene) as ds:
        assert out["r"][0] == pytest.approx(float(ds.read(1).mean()))
    assert QgsCoordinateReferenceSystem("EPSG:32618").isValid()
