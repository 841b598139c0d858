"""Caption-set readers on tiny fixtures of each real format, written here into tmp_path."""

import io
import json
import tarfile

import numpy as np
import pytest
from PIL import Image

from training.data.errors import DatasetError, MissingImageError
from training.data.readers import CaptionRecord, read_caption_csv, read_karpathy_json, read_tar_shards


def image_bytes(fmt: str, value: int) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(np.full((8, 8, 3), value, np.uint8)).save(buf, format=fmt)
    return buf.getvalue()


@pytest.fixture
def images(tmp_path):
    folder = tmp_path / "imgs"
    folder.mkdir()
    (folder / "airport_1.jpg").write_bytes(image_bytes("JPEG", 10))
    (folder / "12.tif").write_bytes(image_bytes("TIFF", 20))
    return folder


def test_karpathy_json(tmp_path, images):
    data = {"images": [
        {"filename": "airport_1.jpg", "split": "train", "imgid": 0,
         "sentences": [{"raw": "Many planes are parked.", "tokens": ["many"]}, {"raw": "An airport."}]},
        {"filename": "12.tif", "split": "test", "sentences": [{"tokens": ["a", "dense", "residential", "area"]}]},
    ]}
    path = tmp_path / "dataset_rsicd.json"
    path.write_text(json.dumps(data))
    records = list(read_karpathy_json(path, image_root=images))
    assert records == [
        CaptionRecord(images / "airport_1.jpg", ("Many planes are parked.", "An airport."), "train", "airport_1.jpg"),
        CaptionRecord(images / "12.tif", ("a dense residential area",), "test", "12.tif"),
    ]
    assert [r.key for r in read_karpathy_json(path, image_root=images, split="test")] == ["12.tif"]
    # default root is the JSON's folder; here with a COCO-Karpathy style "filepath"
    data["images"][0]["filepath"] = "imgs"
    path.write_text(json.dumps({"images": data["images"][:1]}))
    assert next(read_karpathy_json(path)).image == images / "airport_1.jpg"


def test_karpathy_missing_image_names_entry(tmp_path, images):
    path = tmp_path / "d.json"
    path.write_text(json.dumps({"images": [
        {"filename": "airport_1.jpg", "split": "train", "sentences": []},
        {"filename": "gone.jpg", "split": "train", "sentences": [{"raw": "x"}]}]}))
    with pytest.raises(MissingImageError, match=r"d\.json: images\[1\] \(gone\.jpg\).*gone\.jpg"):
        list(read_karpathy_json(path, image_root=images))
    assert len(list(read_karpathy_json(path, image_root=images, check_exists=False))) == 2
    path.write_text("{}")
    with pytest.raises(DatasetError, match=r"d\.json"):
        list(read_karpathy_json(path))


def test_csv_with_header(tmp_path, images):
    path = tmp_path / "rs5m.csv"
    path.write_text('filepath,title\nimgs/airport_1.jpg,"planes, a runway and a terminal"\n\n'
                    f"{images / '12.tif'},houses with trees\n")
    records = list(read_caption_csv(path))
    assert records == [
        CaptionRecord(images / "airport_1.jpg", ("planes, a runway and a terminal",), None, "imgs/airport_1.jpg"),
        CaptionRecord(images / "12.tif", ("houses with trees",), None, str(images / "12.tif")),
    ]
    swapped = tmp_path / "swapped.csv"  # named columns in any order
    swapped.write_text("caption,image\nsome roads,imgs/12.tif\n")
    assert next(read_caption_csv(swapped, split="train")) == \
        CaptionRecord(images / "12.tif", ("some roads",), "train", "imgs/12.tif")


def test_csv_without_header_and_tsv(tmp_path, images):
    path = tmp_path / "pairs.csv"
    path.write_text("airport_1.jpg,a runway\n12.tif,a river\n")
    assert [(r.image, r.captions) for r in read_caption_csv(path, image_root=images)] == [
        (images / "airport_1.jpg", ("a runway",)), (images / "12.tif", ("a river",))]
    tsv = tmp_path / "pairs.tsv"
    tsv.write_text("imgs/12.tif\ta river, wide and brown\n")
    assert next(read_caption_csv(tsv)).captions == ("a river, wide and brown",)


def test_csv_missing_image_names_line(tmp_path, images):
    path = tmp_path / "pairs.csv"
    path.write_text('path,caption\nimgs/airport_1.jpg,ok\n"imgs/nothere.png","multi\nline caption"\n')
    with pytest.raises(MissingImageError, match=r"pairs\.csv: line 4.*nothere\.png"):
        list(read_caption_csv(path))
    path.write_text("path,caption\nimgs/airport_1.jpg\n")
    with pytest.raises(DatasetError, match=r"pairs\.csv: line 2"):
        list(read_caption_csv(path))


def add(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    tar.addfile(info, io.BytesIO(data))


def test_tar_shard(tmp_path):
    jpg, png = image_bytes("JPEG", 50), image_bytes("PNG", 90)
    shard = tmp_path / "shard-000000.tar"
    with tarfile.open(shard, "w") as tar:
        add(tar, "s0/000001.jpg", jpg)
        add(tar, "s0/000001.txt", b"a harbor with boats\n\nships near a pier\n")
        add(tar, "s0/000002.png", png)
        add(tar, "s0/000002.json", json.dumps({"captions": ["a farm", "green fields"], "split": "val"}).encode())
        add(tar, "s0/000003.json", json.dumps({"caption": "a bridge"}).encode())
        add(tar, "s0/000003.jpeg", jpg)
    records = list(read_tar_shards(shard, split="train"))
    assert [(r.key, r.captions, r.split) for r in records] == [
        ("s0/000001", ("a harbor with boats", "ships near a pier"), "train"),
        ("s0/000002", ("a farm", "green fields"), "val"),
        ("s0/000003", ("a bridge",), "train"),
    ]
    assert records[0].image == jpg and records[1].image == png
    assert Image.open(io.BytesIO(records[1].image)).format == "PNG"


def test_tar_errors_name_shard_and_key(tmp_path):
    shard = tmp_path / "bad.tar"
    with tarfile.open(shard, "w") as tar:
        add(tar, "a.jpg", image_bytes("JPEG", 1))
        add(tar, "a.txt", b"ok caption")
        add(tar, "b.txt", b"caption without its image")
    with pytest.raises(MissingImageError, match=r"bad\.tar: key 'b'"):
        list(read_tar_shards([shard]))
    with tarfile.open(shard, "w") as tar:
        add(tar, "c.png", image_bytes("PNG", 1))
    with pytest.raises(DatasetError, match=r"bad\.tar: key 'c': no caption member"):
        list(read_tar_shards(shard))
    with tarfile.open(shard, "w") as tar:
        add(tar, "d.png", image_bytes("PNG", 1))
        add(tar, "d.txt", b"y")
        add(tar, "e.png", image_bytes("PNG", 2))
        add(tar, "e.txt", b"x")
        add(tar, "d.json", b"{}")
    with pytest.raises(DatasetError, match=r"bad\.tar: key 'd' members are not consecutive"):
        list(read_tar_shards(shard))
    (tmp_path / "junk.tar").write_bytes(b"not a tar")
    with pytest.raises(DatasetError, match=r"junk\.tar"):
        list(read_tar_shards(tmp_path / "junk.tar"))
