#!/usr/bin/env bash
# Screenshot of the real QGIS desktop with the rsclip-geo toolbar and a text search result on the map.
# Installs the plugin (as built by `python -m qgis_plugin.build_zip`) into a throwaway profile,
# enables it in the profile's QGIS3.ini, lets the plugin's own installer (installer.py) put the runtime
# packages into the profile's rsclip_geo_deps folder, and runs QGIS under Xvfb with
# scripts/qgis_screenshot.py as startup code.
#
#   scripts/qgis_screenshot.sh [OUT.png]      (default docs/qgis_search.png: the toolbar's text search)
#   SHOT=panel scripts/qgis_screenshot.sh docs/qgis_panel.png   (the dock panel classifying 800 m tiles)
# Env: PROFILES (throwaway profiles folder, default /tmp/rsclip-qgis-shot), MODEL (bundle folder;
# default: the shipped model if built, else the tiny test bundle), QUERY, SCENE, SHOT (search | panel),
# CODE (another startup script).
set -euo pipefail
REPO="$(cd "$(dirname "$0")/.." && pwd)"
OUT="$(realpath -m "${1:-$REPO/docs/qgis_search.png}")"
PROFILES="${PROFILES:-/tmp/rsclip-qgis-shot}"
PROFILE="$PROFILES/profiles/default"
VENV_PY="$REPO/.venv/bin/python"
SCENE_SRC="${SCENE:-$REPO/demo/naip_2020_rgbn_5m.tif}"
QUERY="${QUERY:-green fields}"

mkdir -p "$PROFILE/python/plugins" "$PROFILES/work"
# 1. the plugin, from its zip, into the profile
"$VENV_PY" -m qgis_plugin.build_zip -o "$PROFILES/work/rsclip_geo_qgis.zip" >/dev/null
rm -rf "$PROFILE/python/plugins/rsclip_geo_qgis"
(cd "$PROFILE/python/plugins" && unzip -q "$PROFILES/work/rsclip_geo_qgis.zip")
# 2. enabled in the profile's settings (no tips / version check / welcome page)
mkdir -p "$PROFILE/QGIS"
cat > "$PROFILE/QGIS/QGIS3.ini" <<INI
[PythonPlugins]
rsclip_geo_qgis=true

[Qgis]
showTips322=false
checkVersion=false
new_user=false

[UI]
hidebrowser=true
INI
# 3. runtime packages with the plugin's own installer, using QGIS's Python (skipped when complete)
/usr/bin/python3 - "$PROFILE" <<'PY'
import sys
from pathlib import Path
sys.path.insert(0, sys.argv[1] + "/python/plugins")
from rsclip_geo_qgis import deps, installer
target = deps.deps_dir(sys.argv[1])
if deps.check(folder=target) or deps.core_missing():
    rc = installer.install(target, log=lambda line: None)
    print(f"installer.install -> {rc} into {target}")
    sys.exit(rc)
print(f"dependencies already complete in {target}")
PY
# 4. the model and a private copy of the scene (its index is written beside it)
if [ -z "${MODEL:-}" ]; then
  if [ -f "$REPO/rsclip_geo/models/default/model.json" ]; then MODEL=""; else
    MODEL="$PROFILES/work/tiny_bundle"
    (cd "$REPO" && "$VENV_PY" -c "from tests.utils.tiny_bundle import build_tiny_bundle as b; b('$MODEL')")
  fi
fi
cp -f "$SCENE_SRC" "$PROFILES/work/scene.tif"
rm -f "$PROFILES/work/scene.tif.rsclip-index.parquet" "$OUT.log"
mkdir -p "$(dirname "$OUT")"
# 5. QGIS under Xvfb
RSCLIP_SHOT_SCENE="$PROFILES/work/scene.tif" RSCLIP_SHOT_MODEL="$MODEL" RSCLIP_SHOT_QUERY="$QUERY" \
RSCLIP_SHOT_OUT="$OUT" RSCLIP_SHOT_TILE_M="${TILE_M:-160}" RSCLIP_SHOT_MODE="${SHOT:-search}" \
  timeout 300 xvfb-run -a -s "-screen 0 1600x1000x24" \
  qgis --profiles-path "$PROFILES" --profile default --noversioncheck --nologo \
       --code "$(realpath "${CODE:-$REPO/scripts/qgis_screenshot.py}")" || rc=$?
cat "$OUT.log" 2>/dev/null || true
rm -f "$OUT.log"
if test -s "$OUT"; then  # 256 colours: a third of the size, same look for a UI screenshot
  "$VENV_PY" -c "import sys; from PIL import Image; im = Image.open(sys.argv[1]).convert('RGB'); \
im.quantize(256, method=Image.Quantize.MEDIANCUT, dither=Image.Dither.NONE).save(sys.argv[1], optimize=True)" "$OUT"
  echo "wrote $OUT"
fi
exit "${rc:-0}"
