# Two entry points for a fresh Debian machine (see README): `make demo` and `make test`.
# Both are idempotent: they create .venv (seeing the system's QGIS bindings), install what is
# missing, then run. Every pip install is pinned by constraints.txt (numpy < 2, torch pair).

SHELL := /bin/bash
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip install -q -c constraints.txt
DEMO_OUT ?= demo/out

.PHONY: demo test system venv runtime dev clean-demo plugin-zip

# Debian packages: QGIS Python bindings (plugin tests) and venv support; only when root and missing.
system:
	@if ! /usr/bin/python3 -c "import qgis.core" 2>/dev/null || ! /usr/bin/python3 -c "import ensurepip" 2>/dev/null; then \
	  if [ "$$(id -u)" = 0 ]; then \
	    echo "installing python3-qgis python3-venv (apt)"; \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3-qgis python3-venv >/dev/null; \
	  else \
	    echo "note: not root; install python3-qgis python3-venv with apt for the QGIS plugin and its tests"; \
	  fi; \
	fi

$(VENV)/bin/python: | system
	/usr/bin/python3 -m venv --system-site-packages $(VENV)

venv: $(VENV)/bin/python

# Stamps keyed by the files that decide what is installed, so a change reinstalls.
$(VENV)/.runtime-%: pyproject.toml constraints.txt | venv
	$(PIP) -e .
	@rm -f $(VENV)/.runtime-*; touch $@

$(VENV)/.dev-%: pyproject.toml constraints.txt | venv
	$(PIP) -e ".[train,dev]"
	@rm -f $(VENV)/.dev-*; touch $@

HASH := $(shell cat pyproject.toml constraints.txt | sha1sum | cut -c1-12)
runtime: system $(VENV)/.runtime-$(HASH)
dev: system $(VENV)/.dev-$(HASH)

demo: runtime
	@mkdir -p $(DEMO_OUT)
	$(VENV)/bin/rsclip-geo tile-classify demo/naip_2020_rgbn_5m.tif --labels-file demo/labels.txt \
	  -o $(DEMO_OUT)/naip_labels.gpkg --raster $(DEMO_OUT)/naip_labels.tif --overwrite

test: dev
	QT_QPA_PLATFORM=offscreen $(PY) -m pytest -q

clean-demo:
	rm -rf $(DEMO_OUT)

# QGIS plugin zip (Install from ZIP): dist/rsclip_geo_qgis-<version>.zip with the core vendored.
plugin-zip: | venv
	$(PY) -m qgis_plugin.build_zip
