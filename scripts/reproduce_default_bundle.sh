#!/usr/bin/env bash
# Rebuild the shipped default bundle from its training runs with the model card's commands, and compare every
# file with rsclip_geo/models/default byte for byte (MODEL_CARD.md is written by hand and not rebuilt).
#
#   scripts/reproduce_default_bundle.sh [RUN] [DENSE_RUN] [OUT] [DISTILL_RUN] [EPOCH] [TEXT_RUN]
#     RUN          main training run   (default runs/fresh_soup: python -m training.soup --config
#                                       training/configs/soup_v26_long_replicate.toml, after the two runs its header
#                                       names; v2.6's was runs/wide_crops, training/configs/default.toml)
#     DENSE_RUN    dense-head run      (default runs/dense_align_fresh_soup: python -m training.dense_align --config
#                                       training/configs/dense_align_tail.toml --checkpoint RUN/checkpoint_final.pt)
#     OUT          where the rebuilt bundle goes (default /tmp/rsclip-default-rebuilt; replaced)
#     DISTILL_RUN  rotation-distillation run (default: OUT.distill, run anew from the rebuilt undistilled bundle,
#                  ~65 min; an existing run's checkpoint_epoch<EPOCH>.pt is exported instead, an interrupted
#                  one is resumed)
#     EPOCH        which distillation epoch to export (default: the shipped bundle's; a new candidate's when
#                  building the bundle that is to replace it)
#     TEXT_RUN     text-tuning run, when the shipped bundle's model.json records one (source.text_tune, since v2.8;
#                  default: OUT.text, run anew from the distilled bundle, ~15 min; an existing run's text_tower.pt
#                  is exported instead, an interrupted one resumed); the dense threshold is then picked again with
#                  the tuned text encoder
# PYTHON: the interpreter to use (default .venv/bin/python).
# Needs the fetched data (training/DATA.md) for the distillation's images and the evaluation written into
# model.json. ~8 min on 2 cores with an existing DISTILL_RUN.
# Exit 0 only when every file matches.
set -euo pipefail
REPO="$(cd "$(dirname "$0")/.." && pwd)"
cd "$REPO"
RUN="${1:-runs/fresh_soup}"
DENSE_RUN="${2:-runs/dense_align_fresh_soup}"
OUT="${3:-/tmp/rsclip-default-rebuilt}"
DISTILL_RUN="${4:-$OUT.distill}"
TEXT_RUN="${6:-$OUT.text}"
SHIPPED=rsclip_geo/models/default
PY="${PYTHON:-.venv/bin/python}"  # the recipe passes its own interpreter (a worktree has no .venv)
NAME=$($PY -c "import json, sys; print(json.load(open(sys.argv[1]))['name'])" "$SHIPPED/model.json")
LICENSE=$($PY -c "import json, sys; print(json.load(open(sys.argv[1]))['license'])" "$SHIPPED/model.json")
EPOCH="${5:-$($PY -c "import json, sys; print(json.load(open(sys.argv[1]))['source']['rotation_distill']['epoch'])" \
  "$SHIPPED/model.json")}"
CKPT="$RUN/checkpoint_final.pt"
rm -rf "$OUT" "$OUT.stage" "$OUT.undistilled" "$OUT.distilled"
mkdir -p "$(dirname "$OUT")"
ARCH="$(mktemp -d)/RSCLIP-EfficientNetLite1-MiniLM.json"  # the architecture name is the file's stem
cp "$RUN/model_config.json" "$ARCH"

set -x
"$PY" -m rsclip_geo models export --arch "$ARCH" --checkpoint "$CKPT" -o "$OUT.stage" --int8 --dense \
  --name "$NAME" --license "$LICENSE"
$PY -c "from rsclip_geo.export.weight_storage import store_bundle_image_fp16 as f; import sys; f(sys.argv[1])" \
  "$OUT.stage"
$PY -m training.dense_align export --projection "$DENSE_RUN/dense_projection.pt" --checkpoint "$CKPT" \
  --bundle "$OUT.stage" -o "$OUT.undistilled"
$PY -m training.dense_align threshold --run "$DENSE_RUN" --projection "$DENSE_RUN/dense_projection.pt" \
  --bundle "$OUT.undistilled" --checkpoint "$CKPT" --min-precision 0.5 --write
# the image tower distilled from the undistilled bundle's own four-turn ensemble (training/rotation_distill.py)
if [ -f "$DISTILL_RUN/checkpoint_epoch$EPOCH.pt" ]; then
  $PY -m training.rotation_distill export --checkpoint "$DISTILL_RUN/checkpoint_epoch$EPOCH.pt" \
    --bundle "$OUT.undistilled" -o "$OUT.distilled"
else
  RESUME=()
  [ -f "$DISTILL_RUN/checkpoint_last.pt" ] && RESUME=(--resume)  # an interrupted run goes on where it stopped
  $PY -m training.rotation_distill --config training/configs/rotation_distill.toml --bundle "$OUT.undistilled" \
    --out "$DISTILL_RUN" "${RESUME[@]}"
  cp -r "$DISTILL_RUN/bundle_epoch$EPOCH" "$OUT.distilled"
fi
TUNED=$($PY -c "import json, sys; print(int('text_tune' in json.load(open(sys.argv[1]))['source']))" "$SHIPPED/model.json")
if [ "$TUNED" = 1 ]; then
  if [ -f "$TEXT_RUN/text_tower.pt" ]; then
    $PY -m training.text_tune export --checkpoint "$TEXT_RUN/text_tower.pt" --bundle "$OUT.distilled" -o "$OUT"
  else
    RESUME=()
    [ -f "$TEXT_RUN/checkpoint_last.pt" ] && RESUME=(--resume)
    $PY -m training.text_tune --config training/configs/text_tune.toml --bundle "$OUT.distilled" --out "$TEXT_RUN" \
      "${RESUME[@]}"
    cp -r "$TEXT_RUN/bundle" "$OUT"
  fi
  $PY -m training.dense_align threshold --run "$DENSE_RUN" --projection "$DENSE_RUN/dense_projection.pt" \
    --bundle "$OUT" --checkpoint "$CKPT" --min-precision 0.5 --write
else
  mv "$OUT.distilled" "$OUT"
fi
$PY -m training.model_report "$OUT" --write-card
set +x
rm -rf "$OUT.stage" "$OUT.undistilled" "$OUT.distilled" "$(dirname "$ARCH")"

# same / DIFFERENT (for model.json: the keys that differ) / MISSING / EXTRA; exit 0 only when all match
$PY -m training.bundle_compare "$SHIPPED" "$OUT"
