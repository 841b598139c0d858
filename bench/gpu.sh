#!/usr/bin/env bash
# bench/gpu.sh: measure rsclip-geo's CUDA paths (fp16 bundles, IO binding) in one command, on a machine with an
# NVIDIA GPU. Prints, within about 5 minutes: image encoder img/s fp32/fp16 at batch 32/128 with IO binding on and
# off, end-to-end tile_classify vs the bare encoder (bench/throughput.py; fixed batch shape on, and off at batch 32),
# and fp16-vs-fp32 zero-shot top-1 on the AID held-out split (bench/gpu_bench.py does the measuring). Measured on
# an H200 on 2026-12-04: README, GPU (setup 29 s, measuring 177 s).
#
#   bash bench/gpu.sh          on the GPU machine. Without a CUDA device it stops at once, installing nothing.
#   bash bench/gpu.sh stage    here (no GPU): onnxruntime-gpu and the runtime's wheels (Python 3.12, x86-64), the
#                              AID images the top-1 check reads and the shipped bundle's encoders, into .gpu_stage/,
#                              packed (xz) as parts of at most GPU_PART_MIB (48) MiB (.gpu_stage/parts/) for a
#                              machine that reaches no package index. onnxruntime-gpu keeps only the kernels of
#                              GPU_SM (90: H100/H200; bench/gpu_prune_wheel.py): 256 -> 114 MB, and the wheels are
#                              re-stored uncompressed so xz packs them: 150 MB in all instead of 350
#   bash bench/gpu.sh receive  on the GPU machine, once per carried part: keeps it in .gpu_recv/ (ignored, kept
#                              while the machine stays warm); the run unpacks them all, and puts back any of the
#                              bundle's files the working tree lacks (the encoders are 41 MB of a 57 MB tree: a
#                              transfer with a size limit can leave them out and carry them in the parts)
#
# The run makes a scratch venv (--system-site-packages: it reuses what the machine has, e.g. numpy, pyarrow,
# tokenizers), installs what the runtime lacks and onnxruntime-gpu into it (pinned by constraints.txt; wheels from
# .gpu_stage/wheels, $GPU_WHEELS or the unpacked parts when present, else the package index), and never touches
# the machine's own onnxruntime. Settings: GPU_PYTHON (python3), GPU_VENV (/tmp/gpuvenv), GPU_AID (AID folder),
# GPU_PER_CLASS (25), GPU_SECONDS (3 per encoder configuration), GPU_JSON (results file).
set -euo pipefail
cd "$(dirname "$0")/.."
REPO=$PWD
PER_CLASS=${GPU_PER_CLASS:-25}
# pyogrio is left out: the benchmark writes no vector file (geopandas imports it only to read or write one)
RUNTIME_PKGS=(rasterio pyproj shapely geopandas affine ftfy wcwidth cligj click-plugins onnxconverter-common)
BUNDLE=rsclip_geo/models/default
BUNDLE_FILES=(model.json image_encoder.onnx text_encoder.int8.onnx dense_encoder.onnx tokenizer.json)

say() { echo "bench/gpu.sh: $*" >&2; }

pinned_constraints() {  # constraints.txt less the numpy<2/pyarrow<21 pins (they exist for Debian's GDAL bindings,
  # which a venv over a numpy-2 Python never loads) when the base Python already has numpy 2
  local out=$1 py=$2
  if "$py" -c 'import numpy, sys; sys.exit(int(numpy.__version__.split(".")[0]) < 2)' 2>/dev/null; then
    grep -v -E '^(numpy|pyarrow)' constraints.txt >"$out"
  else
    cp constraints.txt "$out"
  fi
}

stage() {
  local py=${GPU_STAGE_PYTHON:-$REPO/.venv/bin/python}
  local cons=/tmp/gpu_stage_constraints.txt
  rm -rf .gpu_stage && mkdir -p .gpu_stage/wheels .gpu_stage/parts
  grep -v -E '^(numpy|pyarrow)' constraints.txt >"$cons"  # the GPU machine's Python has numpy 2
  "$py" -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_17_x86_64 \
    --platform manylinux2014_x86_64 --platform manylinux1_x86_64 --platform any -c "$cons" -d .gpu_stage/wheels \
    onnxruntime-gpu "${RUNTIME_PKGS[@]}"
  local ort
  ort=$(ls .gpu_stage/wheels/onnxruntime_gpu-*.whl)
  # every wheel written uncompressed (pip installs it alike), so xz packs the contents, not deflated bytes
  "$py" bench/gpu_prune_wheel.py "$ort" --keep-sm "${GPU_SM:-90}" -o .gpu_stage/pruned --uncompressed
  mv .gpu_stage/pruned/"$(basename "$ort")" "$ort" && rmdir .gpu_stage/pruned
  "$py" bench/gpu_prune_wheel.py --uncompressed $(ls .gpu_stage/wheels/*.whl | grep -v onnxruntime_gpu)
  "$py" bench/gpu_bench.py --stage-aid .gpu_stage/aid --per-class "$PER_CLASS" --aid "${GPU_AID:-../shared/data/aid}"
  mkdir -p .gpu_stage/bundle
  for f in "${BUNDLE_FILES[@]}"; do cp "$BUNDLE/$f" .gpu_stage/bundle/; done
  tar -C .gpu_stage -cf - wheels aid bundle | xz -6 -T0 | split -b "${GPU_PART_MIB:-48}m" -d - .gpu_stage/parts/part-
  ls -l .gpu_stage/parts
  say "staged. On the GPU machine, one call per part (each within the machine's warm window), e.g.:"
  for part in .gpu_stage/parts/part-*; do
    say "  run(command='bash bench/gpu.sh receive', carry=['$part'])"
  done
  say "  then run(command='bash bench/gpu.sh', timeout_s=420)"
}

receive() {
  mkdir -p .gpu_recv
  local n=0
  for part in .gpu_stage/parts/part-*; do
    [ -f "$part" ] || continue
    cp "$part" .gpu_recv/ && n=$((n + 1))
  done
  say "received $n part(s); .gpu_recv holds $(ls .gpu_recv | wc -l), $(du -sh .gpu_recv | cut -f1)"
}

unxz_stream() {  # xz -d where the machine has xz, else Python's lzma
  if command -v xz >/dev/null 2>&1; then xz -d; else
    "$1" -c 'import lzma, shutil, sys; shutil.copyfileobj(lzma.open(sys.stdin.buffer), sys.stdout.buffer)'; fi
}

require_cuda() {  # fail fast: before any venv, download or install
  if ! command -v nvidia-smi >/dev/null 2>&1; then
    say "no CUDA device: nvidia-smi is not installed here. This script measures onnxruntime's CUDA paths and"
    say "needs a machine with an NVIDIA GPU and its driver; nothing was installed or run."
    exit 2
  fi
  if ! nvidia-smi -L 2>/dev/null | grep -q '^GPU '; then
    say "no CUDA device: nvidia-smi lists no GPU ($(nvidia-smi -L 2>&1 | head -1)). Nothing was installed or run."
    exit 2
  fi
  say "$(nvidia-smi -L | head -1)"
}

run() {
  require_cuda
  local start=$SECONDS py=${GPU_PYTHON:-python3} venv=${GPU_VENV:-/tmp/gpuvenv} wheels=${GPU_WHEELS:-}
  local aid=${GPU_AID:-}
  if compgen -G ".gpu_recv/part-*" >/dev/null; then
    rm -rf /tmp/gpu_stage && mkdir -p /tmp/gpu_stage
    cat .gpu_recv/part-* | unxz_stream "$py" | tar -C /tmp/gpu_stage -xf -
    wheels=${wheels:-/tmp/gpu_stage/wheels}
    aid=${aid:-/tmp/gpu_stage/aid}
    for f in "${BUNDLE_FILES[@]}"; do
      [ -f "$BUNDLE/$f" ] || { cp /tmp/gpu_stage/bundle/"$f" "$BUNDLE/$f" && say "bundle: $f from the parts"; }
    done
  fi
  [ -z "$wheels" ] && [ -d .gpu_stage/wheels ] && wheels=.gpu_stage/wheels
  [ -z "$aid" ] && [ -d .gpu_stage/aid ] && aid=.gpu_stage/aid
  aid=${aid:-../shared/data/aid}

  if [ ! -x "$venv/bin/python" ]; then
    "$py" -m venv --system-site-packages "$venv"
    # a python3 that is itself a venv (e.g. one holding torch and numpy): --system-site-packages would show the
    # base interpreter's packages, not its own, so its site-packages are added after the scratch venv's own
    "$venv/bin/python" -c 'import site, sys; print("\n".join(sys.argv[1:]), file=open(site.getsitepackages()[0]
        + "/_gpu_parent_env.pth", "w"))' $("$py" -c 'import site; print(" ".join(site.getsitepackages()))')
  fi
  local vpy=$venv/bin/python cons=/tmp/gpu_constraints.txt
  pinned_constraints "$cons" "$vpy"
  local from=()
  [ -n "$wheels" ] && from=(--no-index --find-links "$wheels")
  local pip=("$vpy" -m pip install -q --disable-pip-version-check -c "$cons" "${from[@]}")
  local missing=()
  for pkg in "${RUNTIME_PKGS[@]}" numpy onnx tokenizers pillow click tqdm scipy pyarrow regex; do
    mod=${pkg//-/_}
    case $pkg in pillow) mod=PIL ;; esac
    "$vpy" -c "import $mod" 2>/dev/null || missing+=("$pkg")
  done
  if [ ${#missing[@]} -gt 0 ]; then
    say "installing ${missing[*]}"
    if ! "${pip[@]}" --no-deps "${missing[@]}"; then
      say "could not install ${missing[*]} from ${wheels:-the package index} (stage wheels: bash bench/gpu.sh stage)"
      exit 3
    fi
  fi
  if ! "$vpy" -c 'import onnxruntime as o, sys; sys.exit("CUDAExecutionProvider" not in o.get_available_providers())' \
      2>/dev/null; then
    # the GPU build and the CPU one overwrite each other's files: only the venv's own copy is replaced
    "$vpy" -m pip uninstall -y -q onnxruntime 2>/dev/null || true
    say "installing onnxruntime-gpu ($(grep -E '^onnxruntime-gpu' constraints.txt || echo unpinned))"
    if ! "${pip[@]}" --no-deps onnxruntime-gpu; then
      say "could not install onnxruntime-gpu from ${wheels:-the package index}. A machine that reaches no index"
      say "needs the wheels staged: bash bench/gpu.sh stage (here), then receive (there). Stopping."
      exit 3
    fi
  fi
  # CUDA/cuDNN libraries of the machine's own pip packages (nvidia-*), where onnxruntime looks for them
  local libs
  libs=$("$vpy" -c 'import glob, os, site; print(":".join(sorted({d for p in site.getsitepackages()
        for d in glob.glob(os.path.join(p, "nvidia", "*", "lib"))})))')
  export LD_LIBRARY_PATH=${libs}${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}
  export PYTHONPATH=$REPO${PYTHONPATH:+:$PYTHONPATH} PYTHONUNBUFFERED=1
  if ! "$vpy" -c 'import onnxruntime as o, sys; sys.exit("CUDAExecutionProvider" not in o.get_available_providers())'; then
    say "onnxruntime in $venv has no CUDAExecutionProvider after installing onnxruntime-gpu; stopping."
    exit 3
  fi
  say "setup took $((SECONDS - start)) s; measuring"
  local json=()
  [ -n "${GPU_JSON:-}" ] && json=(--json "$GPU_JSON")
  timeout 330 "$vpy" bench/gpu_bench.py --aid "$aid" --per-class "$PER_CLASS" --seconds "${GPU_SECONDS:-3}" "${json[@]}"
  say "total $((SECONDS - start)) s"
}

case ${1:-run} in
  run) run ;;
  stage) stage ;;
  receive) receive ;;
  *) say "usage: bash bench/gpu.sh [run|stage|receive]"; exit 64 ;;
esac
