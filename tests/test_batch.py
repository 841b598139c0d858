"""Batch jobs over many scenes: a real 2-process Dask LocalCluster against the in-process run.

Real scenes from the shared data, the tiny real ONNX bundle, big tiles (128 px) so it stays quick.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from rsclip_geo.batch.jobs import (batch_classify, batch_index, model_load_count, read_classification, run_jobs,
                              threads_by_worker)
from rsclip_geo.cli import main
from rsclip_geo.errors import MissingDependencyError
from rsclip_geo.embeddings.index import read_index
from rsclip_geo.tasks.search import search
from rsclip_geo.raster.tiling import TileSpec
from tests.utils.rasters import truncate_file
from tests.utils.tiny_bundle import build_tiny_bundle

SCENES = ("rgbn_5m.tif", "naip_2020_rgbn_5m.tif", "spacenet_pan_050m.tif")
TILE = TileSpec(size_px=128)
LABELS = "red,green,blue"
REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def scenes(shared_data, tmp_path_factory) -> list[Path]:
    """Copies of three real scenes (RGBN uint8, RGBN uint8 with nodata, 1-band uint16 pan)."""
    folder = tmp_path_factory.mktemp("scenes")
    return [Path(shutil.copy(shared_data / "scenes" / name, folder / name)) for name in SCENES]


@pytest.fixture(scope="module")
def client():
    distributed = pytest.importorskip("distributed", reason="dask.distributed (rsclip-geo[cluster]) not installed")
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                                  dashboard_address=":0") as cluster, distributed.Client(cluster) as c:
        yield c


@pytest.fixture(scope="module")
def runs(scenes, tiny_bundle, client, tmp_path_factory):
    """The same index and classify jobs in-process and on the cluster (shared by the comparison tests)."""
    out = tmp_path_factory.mktemp("runs")
    kw = dict(model=tiny_bundle, device="cpu", batch_size=4)
    return {
        "index_seq": batch_index(scenes, out / "index_seq", scales=[TILE], **kw),
        "index_dask": batch_index(scenes, out / "index_dask", scales=[TILE], client=client, **kw),
        "cls_seq": batch_classify(scenes, out / "cls_seq", LABELS, tile=TILE, **kw),
        "cls_dask": batch_classify(scenes, out / "cls_dask", LABELS, tile=TILE, client=client, **kw),
    }


def _by_scene(summary):
    return {Path(r.scene).name: r for r in summary.results}


def _mtimes(folder: Path) -> dict:
    return {p.name: p.stat().st_mtime_ns for p in sorted(folder.glob("*.parquet"))}


# ---- the cluster gives the single-process results ---------------------------------
def test_cluster_index_equals_single_process(runs, scenes):
    seq, dask = _by_scene(runs["index_seq"]), _by_scene(runs["index_dask"])
    assert set(seq) == set(dask) == set(SCENES)
    assert all(r.status == "done" for r in [*seq.values(), *dask.values()])
    assert all(r.worker.startswith("tcp://") for r in dask.values())
    for name in SCENES:
        a, b = read_index(seq[name].output), read_index(dask[name].output)
        assert len(a) == seq[name].tiles > 0
        cols = ["scene", "scale", "tile_px", "row", "col", "valid_frac"]
        assert a.frame[cols].equals(b.frame[cols])
        assert a.frame.geometry.geom_equals_exact(b.frame.geometry, 1e-9).all()
        np.testing.assert_allclose(a.embeddings, b.embeddings, atol=1e-6)
        assert a.meta["scene"] == b.meta["scene"] and a.meta["tiling"] == b.meta["tiling"]
        assert a.meta["batch"]["name"] == name
        assert a.frame["scene"].iloc[0] == str((scenes[0].parent / name).resolve())


def test_cluster_classification_equals_single_process(runs):
    seq, dask = _by_scene(runs["cls_seq"]), _by_scene(runs["cls_dask"])
    assert all(r.status == "done" for r in [*seq.values(), *dask.values()])
    for name in SCENES:
        import geopandas as gpd

        a, b = gpd.read_parquet(seq[name].output), gpd.read_parquet(dask[name].output)
        assert len(a) == seq[name].tiles > 0
        assert list(a.columns) == list(b.columns) and a.crs == b.crs
        for col in ("scene", "row", "col", "label", "label_1", "label_2", "label_3"):
            assert a[col].tolist() == b[col].tolist()
        np.testing.assert_allclose(a[["score", "score_1", "score_2"]], b[["score", "score_1", "score_2"]], atol=1e-6)
        assert set(a["label"]) <= set(LABELS.split(","))
    merged = read_classification(runs["cls_dask"].out_dir)
    assert set(Path(s).name for s in merged["scene"]) == set(SCENES)
    assert len(merged) == sum(r.tiles for r in runs["cls_dask"].results)


# ---- resumable ----------------------------------------------------------------------
def test_rerun_skips_finished_scenes_without_encoding(runs, scenes, tiny_bundle, client):
    out = Path(runs["index_dask"].out_dir)
    before, loads = _mtimes(out), client.run(model_load_count)
    again = batch_index(scenes, out, tiny_bundle, scales=[TILE], client=client, device="cpu", batch_size=4)
    assert (len(again.done), len(again.skipped), len(again.failed)) == (0, 3, 0)
    assert _mtimes(out) == before
    assert client.run(model_load_count) == loads
    assert "0 done, 3 skipped (already finished), 0 failed" in again.describe()
    cls_out = Path(runs["cls_seq"].out_dir)
    cls_before = _mtimes(cls_out)
    again = batch_classify(scenes, cls_out, LABELS, tiny_bundle, tile=TILE, device="cpu", batch_size=4)
    assert len(again.skipped) == 3 and _mtimes(cls_out) == cls_before


def test_changed_parameter_or_model_or_scene_reruns_affected(scenes, tiny_bundle, client, tmp_path):
    own = [Path(shutil.copy(s, tmp_path / s.name)) for s in scenes]
    out = tmp_path / "out"
    kw = dict(scales=[TILE], device="cpu", batch_size=4)
    assert len(batch_index(own, out, tiny_bundle, **kw).done) == 3
    # one scene file changed: only it is re-run
    os.utime(own[1], ns=(own[1].stat().st_atime_ns, own[1].stat().st_mtime_ns + 10**9))
    s = batch_index(own, out, tiny_bundle, **kw)
    assert [(Path(r.scene).name, r.status, r.reason) for r in s.results if r.status == "done"] == [
        (own[1].name, "done", "the scene file changed")]
    assert len(s.skipped) == 2
    # a parameter changed: every scene is re-run, on the cluster
    s = batch_index(own, out, tiny_bundle, client=client, **{**kw, "scales": [TileSpec(size_px=160)]})
    assert len(s.done) == 3 and {r.reason for r in s.done} == {"the tile sizes/overlaps differ"}
    assert all(read_index(r.output).frame["tile_px"].eq(160).all() for r in s.done)
    s = batch_index(own, out, tiny_bundle, dtype="float32", **{**kw, "scales": [TileSpec(size_px=160)]})
    assert {r.reason for r in s.done} == {"the embedding dtype differs"} and len(s.done) == 3
    # another model: every scene is re-run
    other = build_tiny_bundle(tmp_path / "other_bundle", size=24)
    s = batch_index(own, out, other, dtype="float32", **{**kw, "scales": [TileSpec(size_px=160)]})
    assert len(s.done) == 3 and all("other weights" in r.reason for r in s.done)
    # classification: other labels re-run
    cls = tmp_path / "cls"
    batch_classify(own, cls, LABELS, tiny_bundle, tile=TILE, device="cpu")
    s = batch_classify(own, cls, "red,blue", tiny_bundle, tile=TILE, device="cpu")
    assert len(s.done) == 3 and {r.reason for r in s.done} == {"the labels or scoring parameters differ"}
    assert len(batch_classify(own, cls, "red,blue", tiny_bundle, tile=TILE, device="cpu").skipped) == 3


def test_model_loaded_once_per_worker(scenes, tiny_bundle, client, tmp_path):
    copies = [Path(shutil.copy(scenes[i % 3], tmp_path / f"copy{i}_{scenes[i % 3].name}")) for i in range(6)]
    before = client.run(model_load_count)
    # batch_size 5: a model configuration no earlier test loaded
    s = batch_index(copies, tmp_path / "out", tiny_bundle, scales=[TILE], client=client, device="cpu", batch_size=5)
    assert len(s.done) == 6
    after = client.run(model_load_count)
    per_worker = {w: sum(r.worker == w for r in s.done) for w in after}
    for worker, n_scenes in per_worker.items():
        assert after[worker] - before[worker] == (1 if n_scenes else 0), (worker, n_scenes, before, after)
    assert max(per_worker.values()) >= 3  # several scenes, one load


def test_worker_with_other_model_files_fails_its_scenes(scenes, tiny_bundle, client, tmp_path):
    from dataclasses import replace

    from rsclip_geo.batch.jobs import ModelSpec, plan_jobs
    from rsclip_geo.batch.collection import read_collection

    spec = ModelSpec(str(tiny_bundle), "cpu", None, 3, fingerprint="0" * 64, name="tiny-rgb")
    params = {"scales": [TILE], "max_invalid": 0.5, "dtype": "float16", "scene_options": {}}
    (tmp_path / "out").mkdir()
    jobs, _ = plan_jobs("index", read_collection(scenes[:2]), tmp_path / "out", spec, params)
    results, n_workers = run_jobs(jobs, client=client)
    assert n_workers == 2 and [r.status for r in results] == ["failed", "failed"]
    assert all("differs from the one the job was planned with" in r.error for r in results)
    assert not list((tmp_path / "out").glob("*.parquet"))
    # the same path, device and batch size with the right fingerprint: loaded afresh, works
    from rsclip_geo.runtime.bundle import bundle_fingerprint, read_bundle

    good = [replace(j, model=replace(spec, fingerprint=bundle_fingerprint(read_bundle(tiny_bundle)))) for j in jobs]
    assert [r.status for r in run_jobs(good, client=client)[0]] == ["done", "done"]


def test_onnxruntime_threads_fit_the_cores(client):
    from rsclip_geo.batch.dask_client import usable_cores

    threads = threads_by_worker(client)
    assert set(threads) == set(client.nthreads())
    assert all(t >= 1 for t in threads.values())
    assert sum(threads.values()) <= max(usable_cores(), len(threads))


# ---- failures ----------------------------------------------------------------------
def test_failing_scene_reported_others_complete(scenes, tiny_bundle, client, tmp_path):
    truncate_file(Path(shutil.copy(scenes[0], tmp_path / "truncated.tif")), 0.5)
    garbage = tmp_path / "garbage.tif"
    garbage.write_bytes(b"this is not a GeoTIFF")
    listing = tmp_path / "scenes.txt"
    listing.write_text("\n".join([str(scenes[0]), "truncated.tif", str(scenes[1]), "garbage.tif",
                                  "missing.tif", str(scenes[2])]) + "\n")
    s = batch_index(listing, tmp_path / "out", tiny_bundle, scales=[TILE], client=client, device="cpu")
    assert len(s.done) == 3 and not s.ok
    failed = {r.name: r.error for r in s.failed}
    assert set(failed) == {"truncated.tif", "garbage.tif", "missing.tif"}
    assert "truncated.tif" in failed["truncated.tif"] and "corrupt" in failed["truncated.tif"]
    assert "garbage.tif: not a readable raster" in failed["garbage.tif"]
    assert "file does not exist" in failed["missing.tif"] and "scenes.txt line 5" in failed["missing.tif"]
    assert sorted(p.name.split("-")[0] for p in (tmp_path / "out").glob("*.parquet")) == sorted(
        p.stem for p in scenes)
    text = s.describe()
    assert "3 done, 0 skipped (already finished), 3 failed" in text and "FAILED garbage.tif" in text


def test_cli_scheduler_exit_code_and_report(scenes, tiny_bundle, client, tmp_path):
    garbage = tmp_path / "garbage.tif"
    garbage.write_bytes(b"nope")
    listing = tmp_path / "list.txt"
    listing.write_text(f"{scenes[0]}\n{garbage}\n")
    report = tmp_path / "report.json"
    args = ["batch", "classify", str(listing), str(tmp_path / "out"), "--labels", LABELS, "--tile-size", "128",
            "--model", str(tiny_bundle), "--device", "cpu", "--scheduler", client.scheduler.address,
            "--report", str(report), "-q"]
    res = CliRunner().invoke(main, args)
    assert res.exit_code == 1, res.output
    assert "1 done, 0 skipped (already finished), 1 failed" in res.output and "FAILED garbage.tif" in res.output
    info = json.loads(report.read_text())
    assert (info["done"], info["failed"]) == (1, 1)
    assert {s["name"]: s["status"] for s in info["scenes"]} == {scenes[0].name: "done", "garbage.tif": "failed"}
    listing.write_text(f"{scenes[0]}\n")  # the bad entry removed: nothing left to do, exit 0
    res = CliRunner().invoke(main, args)
    assert res.exit_code == 0, res.output
    assert "0 done, 1 skipped" in res.output


def test_cli_local_cluster_workers(scenes, tiny_bundle, tmp_path):
    pytest.importorskip("distributed")
    out = tmp_path / "out"
    args = ["batch", "index", str(scenes[0]), str(out), "--workers", "2", "--model", str(tiny_bundle),
            "--device", "cpu", "--tile-size", "128", "-q"]
    res = CliRunner().invoke(main, args)
    assert res.exit_code == 0, res.output
    assert "1 done, 0 skipped (already finished), 0 failed" in res.output and "on 2 workers" in res.output
    assert len(read_index(next(out.glob("*.parquet")))) > 0
    res = CliRunner().invoke(main, args + ["--scheduler", "tcp://x:1"])
    assert res.exit_code == 2 and "not both" in res.output


def test_cli_refuses_more_local_workers_than_the_machine_can_hold(scenes, tiny_bundle, tmp_path):
    """--workers 999999999 would have started that many processes, each loading the model."""
    import os

    res = CliRunner().invoke(main, ["batch", "index", str(scenes[0]), str(tmp_path / "out"), "--workers",
                                    "999999999", "--model", str(tiny_bundle), "-q"])
    assert res.exit_code == 1 and f"workers must be 1-{4 * (os.cpu_count() or 1)} on this machine" in res.output
    assert not (tmp_path / "out").exists()


def test_foreign_file_at_partition_path_needs_overwrite(scenes, tiny_bundle, tmp_path):
    from rsclip_geo.batch.jobs import partition_path
    from rsclip_geo.batch.collection import read_collection

    ref = read_collection([scenes[0]]).scenes[0]
    out = tmp_path / "out"
    out.mkdir()
    partition_path(out, ref).write_text("someone else's file")
    s = batch_index([scenes[0]], out, tiny_bundle, scales=[TILE], device="cpu")
    assert len(s.failed) == 1
    assert "is not an index partition" in s.failed[0].error and "--overwrite" in s.failed[0].error
    s = batch_index([scenes[0]], out, tiny_bundle, scales=[TILE], device="cpu", overwrite=True)
    assert len(s.done) == 1 and len(read_index(s.done[0].output)) > 0


# ---- STAC + search over the output ------------------------------------------------------
def test_stac_collection_to_searchable_dataset(scenes, tiny_bundle, tiny_model, client, tmp_path):
    root = tmp_path / "stac"
    (root / "data").mkdir(parents=True)
    local = Path(shutil.copy(scenes[1], root / "data" / scenes[1].name))
    items = [
        {"type": "Feature", "id": "naip-item", "properties": {}, "geometry": None, "links": [],
         "assets": {"thumb": {"href": "data/thumb.png", "type": "image/png"},
                    "image": {"href": f"data/{local.name}", "type": "image/tiff; application=geotiff"}}},
        {"type": "Feature", "id": "rgbn-item", "properties": {}, "geometry": None, "links": [],
         "assets": {"image": {"href": str(scenes[0]), "type": "image/tiff; application=geotiff"}}},
        {"type": "Feature", "id": "no-raster", "properties": {}, "geometry": None, "links": [],
         "assets": {"metadata": {"href": "meta.xml", "type": "application/xml"}}},
    ]
    stac = root / "items.json"
    stac.write_text(json.dumps({"type": "FeatureCollection", "features": items}))
    out = tmp_path / "index"
    s = batch_index(stac, out, tiny_bundle, scales=[TILE], client=client, device="cpu")
    assert sorted(r.name for r in s.done) == ["naip-item", "rgbn-item"]
    assert [(r.name, r.error) for r in s.failed] == [
        ("no-raster", "no GeoTIFF asset (assets: metadata); choose one with --asset KEY")]
    assert sorted(p.name.split("-item")[0] for p in out.glob("*.parquet")) == ["naip", "rgbn"]
    # --strict: the unusable item stops the job before any work
    res = CliRunner().invoke(main, ["batch", "index", str(stac), str(tmp_path / "strict"), "--strict",
                                    "--model", str(tiny_bundle), "--tile-size", "128", "-q"])
    assert res.exit_code == 1 and "no-raster" in res.output and not list((tmp_path / "strict").glob("*.parquet"))
    # the output folder searches as one dataset; hits name their scene
    hits = search(out, "green", top=200, model=tiny_model).frame
    assert set(hits["scene"]) == {str(local.resolve()), str(scenes[0].resolve())}
    n_tiles = sum(r.tiles for r in s.done)
    assert len(hits) == min(200, n_tiles)
    res = CliRunner().invoke(main, ["search", str(out), "red", "--top", "5", "-o", str(tmp_path / "hits.gpkg"),
                                    "--model", str(tiny_bundle), "--device", "cpu", "-q"])
    assert res.exit_code == 0, res.output
    import geopandas as gpd

    saved = gpd.read_file(tmp_path / "hits.gpkg")
    assert len(saved) == 5 and set(saved["scene"]) <= {str(local.resolve()), str(scenes[0].resolve())}


# ---- optional dependency ----------------------------------------------------------------
def test_core_does_not_import_dask():
    code = ("import sys, rsclip_geo, rsclip_geo.batch.jobs, rsclip_geo.batch.collection, rsclip_geo.cli.batch; "
            "bad = [m for m in ('dask', 'distributed') if m in sys.modules]; assert not bad, bad")
    subprocess.run([sys.executable, "-c", code], check=True, cwd=REPO)


def test_cluster_without_dask_says_what_to_install(monkeypatch, scenes, tiny_bundle, tmp_path):
    monkeypatch.setitem(sys.modules, "distributed", None)  # import distributed -> ImportError
    with pytest.raises(MissingDependencyError, match=r"pip install 'rsclip-geo\[cluster\]'"):
        batch_index([scenes[0]], tmp_path / "out", tiny_bundle, workers=2)
    with pytest.raises(MissingDependencyError, match="cluster"):
        run_jobs([], scheduler="tcp://127.0.0.1:1")
    # in-process needs no dask
    assert batch_index([scenes[0]], tmp_path / "out", tiny_bundle, scales=[TILE], device="cpu").ok


def test_rotations_travel_with_the_job_and_rerun_finished_scenes(scenes, tiny_bundle, tmp_path):
    own = [Path(shutil.copy(s, tmp_path / s.name)) for s in scenes[:2]]
    out = tmp_path / "out"
    kw = dict(scales=[TILE], device="cpu", batch_size=4)
    assert len(batch_index(own, out, tiny_bundle, **kw).done) == 2
    s = batch_index(own, out, tiny_bundle, rotations=4, **kw)
    assert len(s.done) == 2 and {r.reason for r in s.done} == {"it was built with --rotations 1, this run uses "
                                                               "--rotations 4"}
    assert len(batch_index(own, out, tiny_bundle, rotations=4, **kw).skipped) == 2
    from rsclip_geo.embeddings.index import read_index_meta

    assert all(read_index_meta(r.output)["model"]["fingerprint"].endswith("+rot4") for r in s.done)
    cli = [str(tmp_path), str(out), "--device", "cpu", "--model", str(tiny_bundle), "--tile-size", "128", "-q"]
    outputs = []
    for rotations in ("1", "4", "4"):  # the folder holds the two scenes; OUT_DIR's partitions are rot4 ones now
        result = CliRunner().invoke(main, ["batch", "index", *cli, "--rotations", rotations])
        assert result.exit_code == 0, result.output
        outputs.append(result.output)
    assert "2 done, 0 skipped" in outputs[0] and "2 done, 0 skipped" in outputs[1]
    assert "0 done, 2 skipped" in outputs[2]


def test_a_loaded_model_with_other_rotations_is_refused_not_overridden(scenes, tiny_bundle, tmp_path):
    import rsclip_geo

    plain = rsclip_geo.load_model(tiny_bundle, device="cpu")
    with pytest.raises(ValueError, match="rotations=4 but the given model was loaded with rotations=1"):
        batch_index(scenes[:1], tmp_path / "out", plain, scales=[TILE], rotations=4)
    assert not (tmp_path / "out").exists()  # refused before OUT_DIR was made
    turned = rsclip_geo.load_model(tiny_bundle, device="cpu", rotations=4)
    s = batch_index(scenes[:1], tmp_path / "out", turned, scales=[TILE])  # None: the model's own
    from rsclip_geo.embeddings.index import read_index_meta

    assert read_index_meta(s.done[0].output)["model"]["fingerprint"].endswith("+rot4")
