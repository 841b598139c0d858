#!/usr/bin/env bash
# The shipped default model from the fetched data in one command: every step of MODEL_CARD.md "Training" in order
# (v2.8: v2.6's main run, the same recipe for 6 epochs from its probe checkpoint, their soup, the dense head, then
# scripts/reproduce_default_bundle.sh for the export, the rotation distillation, the text tuning, the evaluation and
# the byte-for-byte comparison with rsclip_geo/models/default). A step whose output exists is skipped and an interrupted one resumed,
# so after a stop (or in the next session) the same command goes on where it was. ~6.5 h on 2 cores.
# The run folders are the ones training/configs/soup_v26_long_replicate.toml names. Byte-identical to the shipped
# bundle only on the CPU model it was built on (an AMD EPYC of family 25); elsewhere a model of the same recipe,
# and the comparison at the end (exit 1) names the files that differ.
#
#   RSCLIP_DATA=/path/to/data scripts/train_default_model.sh [OUT]    (default OUT: runs/default_rebuilt)
#   DRY_RUN=1 scripts/train_default_model.sh                          (print the steps still to run, run none)
set -euo pipefail
REPO="$(cd "$(dirname "$0")/.." && pwd)"
cd "$REPO"
PY=.venv/bin/python
OUT="${1:-runs/default_rebuilt}"
SOUP_CONFIG=training/configs/soup_v26_long_replicate.toml
RUNS="$($PY -c "import sys, tomllib; print(*tomllib.load(open(sys.argv[1], 'rb'))['runs'])" "$SOUP_CONFIG")"
read -r MAIN LONG <<< "$RUNS"
SOUP=runs/fresh_soup
DENSE=runs/dense_align_fresh_soup
DISTILL=runs/fresh_soup_distill
TEXT=runs/text_tune_v27

step() {  # step OUTPUT_THAT_MARKS_IT_DONE COMMAND...   ("" : always run)
  local done_file="$1"; shift
  if [ -n "$done_file" ] && [ -e "$done_file" ]; then echo "== done: $*"; return; fi
  echo "== $(date -u +%H:%M:%S) $*"
  [ -n "${DRY_RUN:-}" ] || "$@"
}

# a main run: resumed from its last epoch, or from its own probe checkpoint, or started from PROBE (or anew)
train() {  # train CONFIG RUN [PROBE]
  local config="$1" run="$2" probe="${3:-}" from=()
  if [ -f "$run/checkpoint_last.pt" ]; then from=(--resume "$run/checkpoint_last.pt")
  elif [ -f "$run/checkpoint_probe.pt" ]; then from=(--probe-from "$run/checkpoint_probe.pt")
  elif [ -n "$probe" ]; then from=(--probe-from "$probe")
  fi
  step "$run/checkpoint_final.pt" $PY -m training.train --config "$config" --out "$run" "${from[@]}"
}

train training/configs/default.toml "$MAIN"
train training/configs/long_schedule.toml "$LONG" "$MAIN/checkpoint_probe.pt"
step "$SOUP/checkpoint_final.pt" $PY -m training.soup --config "$SOUP_CONFIG" --out "$SOUP"
step "$DENSE/dense_projection.pt" $PY -m training.dense_align --config training/configs/dense_align_tail.toml \
  --checkpoint "$SOUP/checkpoint_final.pt" --out "$DENSE"
# always run: it replaces OUT, resumes or reuses the distillation run, and compares (~8 min given the distillation)
# (and the text tuning: runs it, or exports its text tower, then re-picks the dense threshold)
step "" scripts/reproduce_default_bundle.sh "$SOUP" "$DENSE" "$OUT" "$DISTILL" "" "$TEXT"
