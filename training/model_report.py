"""Every figure of the model card from one command, measured on the exported bundle through the runtime.

Why: the numbers users rely on must hold for what they run (ONNX, int8 text encoder, PIL preprocessing),
and must come from one reproducible command. Sets (data: training/DATA.md; each one is skipped, with a
note, when its files are absent):
- AID-30 held-out split (training/splits/aid30_split.json, val): zero-shot top-1/top-5, per class;
  linear probe / k-NN / few-shot on frozen embeddings (AID train part -> val).
- AID scenes no stage trains on (training/splits/aid30_train_exclude.txt: RSICD's val/test scenes, all 30
  classes), and of them RSICD's val scenes, which took part in no training and, up to v2.7, in no choice or
  shipping rule (v2.8's rule set a floor on them; its settings were picked on RSICD val captions): zero-shot
  top-1 and its per-class mean.
- RSICD test split (1,093 images): zero-shot by scene class (31 classes, names as RSICD writes them) and
  image-text retrieval R@1/5/10 both ways with its 5 raw captions per image (the standard protocol).
- Other scene sets, by their test parts (never trained on; the v2.2 and v2.3 defaults train on their other images, v2.1
  and earlier never saw the sets at all: the model card says which): UCM (21 classes, VT-RSBS's test split of
  420 images, the split of the published RemoteCLIP/GeoRSCLIP figures that VT-RSBS measured), EuroSAT RGB (10
  classes, 64 px Sentinel-2; the uploader's 4,050-image test split), NWPU-RESISC45 (the 10 official classes of
  the 12-class subset reachable here, its 1,500-image test part): zero-shot top-1 with CLIP's published class
  names for EuroSAT.
- SIRI-WHU (12 classes, 2,398 Google Earth images of 2 m, 200 px; added 2026-12-03): a transfer set no version
  was trained, tuned or chosen on; zero-shot top-1 with the folder names as the runtime reads them.
- NWPU VHR-10 test images (never trained on): RemoteCount-style counting crops with 1-10 objects of one
  class (training/data/count_crops.py), exact / within-1 / MAE vs the best constant guess.

    python -m training.model_report rsclip_geo/models/default --json runs/v2/report.json
    python -m training.model_report rsclip_geo/models/default --rotations 4 --json runs/v2/report_rot4.json
"""

from __future__ import annotations

import argparse
import csv
import json
import time
from pathlib import Path

import numpy as np

from training.data.manifests import data_root

REPO = Path(__file__).resolve().parents[1]
EUROSAT_NAMES = {"AnnualCrop": "annual crop land", "Forest": "forest", "HerbaceousVegetation": "brushland or shrubland",
                 "Highway": "highway or road", "Industrial": "industrial buildings or commercial buildings",
                 "Pasture": "pasture land", "PermanentCrop": "permanent crop land",
                 "Residential": "residential buildings or homes or apartments", "River": "river",
                 "SeaLake": "lake or sea"}  # CLIP's EuroSAT class names (Radford et al. 2021, prompts notebook)
RESISC10 = ("beach", "commercial_area", "desert", "forest", "industrial_area", "island", "lake", "mountain", "river",
            "wetland")  # 'farmland' (two classes merged) and 'residential' (three merged) are left out


def aid30(aid_root: Path):
    """(val dataset, train dataset) of the fixed 30-class split as ImageFolderDatasets."""
    from rsclip_geo.evaluation.datasets import ImageFolderDataset
    from training.data.aid import SPLIT30_FILE, aid_subset, load_split

    split = load_split(SPLIT30_FILE)
    out = []
    for part in ("val", "train"):
        sub = aid_subset(aid_root, part, split)
        out.append(ImageFolderDataset(aid_root, list(sub.classes), list(sub.paths), np.asarray(sub.labels)))
    return out


TRAINING_CONFIG = REPO / "training/configs/default.toml"


def aid30_untrained(aid_root: Path, root: Path):
    """AID scenes of the split's train part that no training stage reads: those the training config's AID entry
    excludes (scenes RSICD holds in its val or test split). Returns (all of them, those RSICD holds in val) as
    ImageFolderDatasets over all 30 classes; the second is None when RSICD's split file is absent.

    Why: the AID-30 held-out split also picked WiSE-FT's alpha and the distillation epoch; the RSICD-val scenes
    here took part in no training and, up to v2.7, in no choice or shipping rule.
    """
    from rsclip_geo.evaluation.datasets import ImageFolderDataset
    from training.config import load_config
    from training.data.aid import aid_subset, load_split
    from training.sources import excluded_keys

    spec = next(d for d in load_config(TRAINING_CONFIG)["datasets"] if d["kind"] == "aid")
    names = excluded_keys(spec, REPO)
    sub = aid_subset(aid_root, spec.get("part", "train"), load_split(REPO / spec["split"]))
    keep = [i for i, p in enumerate(sub.paths) if p.name in names]
    whole = ImageFolderDataset(aid_root, list(sub.classes), [sub.paths[i] for i in keep],
                               np.asarray([sub.labels[i] for i in keep]))
    csv_path = root / "vtrsbs/metadata/RSICD/RSICD.csv"
    if not csv_path.is_file():
        return whole, None
    with csv_path.open(newline="", encoding="utf-8-sig") as fh:
        rsicd_val = {row["filename"] for row in csv.DictReader(fh) if row["split"] == "val"}
    pick = [j for j, p in enumerate(whole.paths) if p.name in rsicd_val]
    val = ImageFolderDataset(aid_root, list(sub.classes), [whole.paths[j] for j in pick], whole.labels[pick])
    return whole, val


def rsicd_split(root: Path, split: str):
    """The records (image, label, captions) of one official RSICD split, or None when RSICD is absent."""
    csv_path = root / "vtrsbs/metadata/RSICD/RSICD.csv"
    images = root / "rsicd/src/datasets/RSICD/raw_dataset/RSICD_images"
    if not csv_path.is_file() or not images.is_dir():
        return None
    from training.data.readers import read_sentence_list_csv

    return list(read_sentence_list_csv(csv_path, images, split=split))


def rsicd_test(root: Path):
    """(image paths, scene labels, caption lists) of RSICD's test split, or None when absent."""
    recs = rsicd_split(root, "test")
    if recs is None:
        return None
    return [r.image for r in recs], [r.label for r in recs], [list(r.captions) for r in recs]


def nwpu_count_crops(root: Path, part: str = "test"):
    """CountSet of counting crops (uint8 arrays) from NWPU VHR-10 images of one part, or None when absent."""
    from PIL import Image

    from rsclip_geo.evaluation.datasets import CountSet
    from training.data.count_crops import count_crops
    from training.data.detection_sets import nwpu_vhr10_images

    if not (root / "image_set" / f"{part}.txt").is_file():
        return None
    crops, objects, counts = [], [], []
    for image_id, path, boxes in nwpu_vhr10_images(root, part):
        with Image.open(path) as im:
            im = im.convert("RGB")
            for c in count_crops(boxes, im.width, im.height, seed=f"test:{image_id}"):
                crops.append(np.asarray(im.crop(c.window)))
                objects.append(c.name)
                counts.append(c.count)
    return CountSet(crops, objects, np.asarray(counts), source=f"NWPU VHR-10 {part}")


def _listed(root: Path, rel_paths: list[str], labels: list[str]):
    from rsclip_geo.evaluation.datasets import ImageFolderDataset

    classes = sorted(set(labels))
    return ImageFolderDataset(root, classes, [root / p for p in rel_paths],
                              np.asarray([classes.index(c) for c in labels]))


def unseen_scene_sets(root: Path, skipped: dict):
    """(key, ImageFolderDataset, class names) of the test part of each other scene set that is on disk."""
    from rsclip_geo.evaluation.datasets import ImageFolderDataset
    from rsclip_geo.runtime.prompts import humanize_class_name

    ucm_csv, ucm = root / "vtrsbs/metadata/UCM/UCM.csv", root / "ucm/Images"
    if ucm_csv.is_file() and ucm.is_dir():
        with ucm_csv.open(newline="", encoding="utf-8") as fh:
            rows = [r for r in csv.DictReader(fh) if r["split"] == "test"]
        # VT-RSBS writes folders as 'parking_lot/parkinglot19.tif'; the release's folders are 'parkinglot'
        rel = [f"{Path(r['filepath']).parent.name.replace('_', '')}/{Path(r['filepath']).name}" for r in rows]
        ds = _listed(ucm, rel, [r["label"] for r in rows])
        yield "ucm_test_zero_shot", ds, list(ds.classes)  # VT-RSBS labels are already words: 'parking lot'

    else:
        skipped["ucm"] = f"{ucm} or {ucm_csv} absent"
    euro = root / "eurosat_rgb"
    if (euro / "2750").is_dir():
        rel = [ln.strip() for ln in (REPO / "training/splits/eurosat_rgb_test.txt").read_text().splitlines() if ln.strip()]
        rel = [r if r.startswith("2750/") else f"2750/{r}" for r in rel]
        ds = _listed(euro, rel, [Path(r).parent.name for r in rel])
        yield "eurosat_test_zero_shot", ds, [EUROSAT_NAMES[c] for c in ds.classes]
    else:
        skipped["eurosat"] = f"{euro}/2750 absent"
    res = root / "resisc45_12cls/NWPU-RESISC12/test"
    if res.is_dir():
        rel = sorted(str(p.relative_to(res)) for c in RESISC10 for p in (res / c).glob("*.jpg"))
        ds = _listed(res, rel, [Path(r).parent.name for r in rel])
        yield "resisc10_test_zero_shot", ds, [c.replace("_", " ") for c in ds.classes]
    else:
        skipped["resisc45"] = f"{res} absent"
    siri = root / "siri_whu/12class_tif"
    if siri.is_dir():  # never trained on by any version, and no training choice was made on it: report only
        ds = ImageFolderDataset.from_folder(siri)
        yield "siri_whu_zero_shot", ds, [humanize_class_name(c) for c in ds.classes]
    else:
        skipped["siri_whu"] = f"{siri} absent"


def sample60_top1(model, val, val_emb=None) -> dict:
    """Top-1 on 2 AID-30 val images per class (training.eval_bundle.sample_per_class, seed 0): the figure the
    test suite re-measures on the shipped bundle (tests/test_default_model.py)."""
    from rsclip_geo.evaluation.embed import embed_images
    from rsclip_geo.runtime.prompts import humanize_class_name
    from training.eval_bundle import sample_per_class

    idx, _ = sample_per_class(range(len(val.paths)), list(val.labels), 2, seed=0)
    emb = val_emb[idx] if val_emb is not None else embed_images(model, [val.paths[i] for i in idx])
    text = model.class_embeddings([humanize_class_name(c) for c in val.classes])
    pred = (emb @ text.T).argmax(1)
    return {"top1": float((pred == val.labels[idx]).mean()), "n": len(idx),
            "draw": "2 per class, training.eval_bundle.sample_per_class(seed=0) over the aid30 val split"}


def report(bundle: Path, aid_root: Path, root: Path, threads: int = 2, probes: bool = True, rotations: int = 1) -> dict:
    import rsclip_geo
    from rsclip_geo.evaluation.counting import evaluate_counting
    from rsclip_geo.evaluation.datasets import CaptionSet, ImageFolderDataset
    from rsclip_geo.evaluation.embed import embed_images
    from rsclip_geo.evaluation.probe import few_shot, knn, linear_probe
    from rsclip_geo.evaluation.retrieval import retrieval_metrics
    from rsclip_geo.evaluation.zero_shot import evaluate_zero_shot

    model = rsclip_geo.load_model(bundle, device="cpu", threads=threads, batch_size=64, rotations=rotations)
    out: dict = {"bundle": str(bundle), "model": model.bundle.name, "rotations": model.rotations, "skipped": {}}
    t0 = time.time()
    val, train = aid30(aid_root)
    val_emb = embed_images(model, val.paths)
    zs = evaluate_zero_shot(model, val, image_embeddings=val_emb)
    out["aid30_zero_shot"] = {"top1": zs.top1, "top5": zs.top5, "n": zs.n, "per_class": zs.per_class}
    out["aid30_val_sample60"] = sample60_top1(model, val, val_emb)
    whole, untouched = aid30_untrained(aid_root, root)
    whole_emb = embed_images(model, whole.paths)
    row = {path: i for i, path in enumerate(whole.paths)}
    for key, ds in (("aid30_untrained_zero_shot", whole), ("aid30_untouched_zero_shot", untouched)):
        if ds is None:
            out["skipped"][key] = f"RSICD's split file not under {root}"
            continue
        z = evaluate_zero_shot(model, ds, image_embeddings=whole_emb[[row[p] for p in ds.paths]])
        out[key] = {"top1": z.top1, "balanced": float(np.mean(list(z.per_class.values()))), "n": z.n,
                    "per_class": z.per_class, "per_class_n": z.per_class_n}
    if probes:
        train_emb = embed_images(model, train.paths)
        lp = linear_probe(train_emb, train.labels, val_emb, val.labels, val.classes)
        kn = knn(train_emb, train.labels, val_emb, val.labels, val.classes)
        fs = few_shot(train_emb, train.labels, val_emb, val.labels, classes=val.classes)
        out["aid30_probe"] = {"linear": lp.accuracy, "knn": kn.accuracy,
                              "few_shot": {str(r.shots): r.mean for r in fs}}
    else:
        out["skipped"]["aid30_probe"] = "--no-probes"
    rs = rsicd_test(root)
    if rs is None:
        out["skipped"]["rsicd"] = f"RSICD files not under {root}"
    else:
        paths, labels, caps = rs
        classes = sorted(set(labels))
        ds = ImageFolderDataset(paths[0].parent, classes, paths, np.asarray([classes.index(c) for c in labels]))
        emb = embed_images(model, paths)
        z = evaluate_zero_shot(model, ds, classnames=classes, image_embeddings=emb)
        out["rsicd_test_zero_shot"] = {"top1": z.top1, "top5": z.top5, "n": z.n, "per_class": z.per_class}
        cs = CaptionSet.from_pairs(paths, caps, source="RSICD test")
        r = retrieval_metrics(emb, model.encode_text(cs.captions), cs.caption_image)
        out["rsicd_test_retrieval"] = r
    for key, ds, names in unseen_scene_sets(root, out["skipped"]):
        z = evaluate_zero_shot(model, ds, classnames=names)
        out[key] = {"top1": z.top1, "top5": z.top5, "n": z.n, "classes": len(ds.classes), "per_class": z.per_class}
    counts = nwpu_count_crops(root / "nwpu_vhr10/data/NWPU_VHR")
    if counts is None:
        out["skipped"]["nwpu_counting"] = "NWPU VHR-10 absent"
    else:
        c = evaluate_counting(model, counts)
        out["nwpu_test_counting"] = {**c.metrics.to_dict(),
                                     "per_object": {k: v.to_dict() for k, v in c.per_object.items()}}
    out["seconds"] = round(time.time() - t0, 1)
    return out


ROWS = (("aid30_zero_shot", "top1", "AID-30 held-out, zero-shot top-1 (2,000 images, 30-way)"),
        ("aid30_untrained_zero_shot", "top1", "AID-30 scenes no stage trains on (RSICD val/test scenes; 1,625)"),
        ("aid30_untouched_zero_shot", "top1", "... of them RSICD val scenes: no training, no choice up to v2.7 (819)"),
        ("aid30_untouched_zero_shot", "balanced", "... the same, mean of per-class accuracies"),
        ("aid30_val_sample60", "top1", "AID-30 seeded 60-image sample (the CI test)"),
        ("aid30_probe", "linear", "AID-30 linear probe (train part -> held-out)"),
        ("aid30_probe", "knn", "AID-30 k-NN (k=20)"),
        ("rsicd_test_zero_shot", "top1", "RSICD test by scene class, zero-shot top-1 (1,093 images, 31-way)"),
        ("rsicd_test_retrieval", "mean_recall", "RSICD test retrieval, mean recall of R@1/5/10 both ways"),
        ("ucm_test_zero_shot", "top1", "UCM test, zero-shot top-1 (420 images, 21-way)"),
        ("eurosat_test_zero_shot", "top1", "EuroSAT RGB test, zero-shot top-1 (4,050 images, 10-way)"),
        ("resisc10_test_zero_shot", "top1", "RESISC45 10-class test, zero-shot top-1 (1,500 images)"),
        ("siri_whu_zero_shot", "top1", "SIRI-WHU, zero-shot top-1 (2,398 images, 12-way; never trained on)"),
        ("nwpu_test_counting", "exact", "NWPU VHR-10 test counting crops: exact"),
        ("nwpu_test_counting", "within1", "NWPU VHR-10 test counting crops: within 1"),
        ("nwpu_test_counting", "mae", "NWPU VHR-10 test counting crops: MAE"),
        ("nwpu_test_counting", "baseline_mae", "... MAE of the best constant guess (the median count)"))


def markdown_table(reports: dict[str, dict]) -> str:
    """One row per figure, one column per report (e.g. the shipped bundle and the ablation)."""
    names = list(reports)
    lines = ["| figure | " + " | ".join(names) + " |", "|---|" + "---|" * len(names)]
    for key, field, label in ROWS:
        cells = []
        for n in names:
            v = reports[n].get(key, {}).get(field)
            cells.append("-" if v is None else (f"{v:.3f}" if isinstance(v, float) else str(v)))
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def write_card(bundle: Path, rep: dict) -> None:
    """card.evaluation of model.json <- the report (per-class tables kept; prediction lists dropped)."""
    path = Path(bundle) / "model.json"
    meta = json.loads(path.read_text(encoding="utf-8"))
    card = meta.setdefault("card", {})
    card["evaluation"] = {"what": "training/model_report.py on this exact bundle through rsclip_geo.load_model "
                                  "(int8 text encoder, each text in a run of its own)",
                          **{k: v for k, v in rep.items() if k not in ("bundle", "model", "seconds")}}
    if (Path(bundle) / "MODEL_CARD.md").is_file():
        card["model_card"] = "MODEL_CARD.md"
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(meta, indent=2) + "\n", encoding="utf-8")
    tmp.replace(path)


def main(argv=None) -> None:
    from rsclip_geo.runtime.encoder import ROTATIONS

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("bundle", type=Path)
    ap.add_argument("--aid", type=Path, default=REPO.parent / "shared" / "data" / "aid")
    ap.add_argument("--data", type=Path, default=None, help="fetched data root (default $RSCLIP_DATA or .cache/data)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--rotations", type=int, default=1, choices=ROTATIONS,
                    help="2 or 4: every image embedded as the mean of its first 2 or 4 quarter turns (--rotations)")
    ap.add_argument("--json", type=Path)
    ap.add_argument("--no-probes", action="store_true", help="skip the linear probe / k-NN / few-shot (minutes)")
    ap.add_argument("--write-card", action="store_true",
                    help="store the figures in the bundle's model.json (card.evaluation; not part of its fingerprint)")
    ap.add_argument("--compare", type=Path, nargs="*", default=[], metavar="REPORT.json",
                    help="print a markdown table of this bundle next to earlier reports (e.g. the ablation)")
    args = ap.parse_args(argv)
    if args.write_card and args.rotations != 1:
        ap.error("--write-card stores the card's figures, which are those of the plain (--rotations 1) run; "
                 "keep a --rotations 2 or 4 report as --json")
    rep = report(args.bundle, args.aid, args.data or data_root(), args.threads, probes=not args.no_probes,
                 rotations=args.rotations)
    from rsclip_geo.evaluation.report import to_json

    text = to_json(rep)
    if args.json:
        args.json.write_text(text + "\n", encoding="utf-8")
    if args.write_card:
        write_card(args.bundle, json.loads(text))
    brief = {k: (v.get("top1", v.get("mae", v)) if isinstance(v, dict) else v) for k, v in rep.items()}
    print(json.dumps(brief, indent=1, default=str))
    if args.compare:
        others = {p.stem: json.loads(p.read_text(encoding="utf-8")) for p in args.compare}
        print(markdown_table({str(args.bundle): json.loads(text), **others}))


if __name__ == "__main__":
    main()
