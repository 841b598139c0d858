"""Training configuration from TOML: defaults merged with the file, unknown keys rejected by name.

Why: the shipped model must be reproducible from one committed file (training/configs/default.toml),
and a typo in a key must fail loudly instead of silently training something else.
"""

from __future__ import annotations

import copy
import sys
import tomllib
from pathlib import Path

DEFAULTS: dict = {
    "seed": 0,
    "model": {
        "config": "RSCLIP-EfficientNetLite0-MiniLM",  # name in training/model_configs or a JSON path
        "image_size": 128,
        "context_length": 64,
        "timm_proj": "linear",
        "pretrained_image": True,
        "init_logit_scale": 2.6592,   # ln(1/0.07), open_clip's default
        "learn_logit_scale": True,
        "max_logit_scale": 100.0,
    },
    "lock": {
        "text": True, "text_unlocked_layers": 0, "text_freeze_layer_norm": True,
        "image": False, "image_unlocked_groups": 0, "image_freeze_bn_stats": False,
    },
    "datasets": [],
    "augment": {"scale_min": 0.5, "rotate90": True, "flip": True,
                "brightness": 0.1, "contrast": 0.1, "saturation": 0.1},
    "optim": {"lr": 1e-3, "trunk_lr": 3e-4, "logit_scale_lr": 1e-2, "weight_decay": 0.05,
              "betas": [0.9, 0.98], "eps": 1e-6, "warmup_steps": 100, "min_lr_ratio": 0.0},
    "train": {"epochs": 10, "batch_size": 64, "samples_per_epoch": 0, "threads": 2,
              "log_every": 20, "precision": "amp", "channels_last": True,
              # > 0: add this weight x cross-entropy of each scene-class item against all classes of its set
              "class_bank_weight": 0.0},
    "eval": {"part": "val", "aid_root": "../shared/data/aid", "split": "", "every": 1},  # split '' = v1 file
    # LP-FT: fit the projection head on frozen trunk features first (0 steps: off)
    "probe": {"steps": 0, "lr": 1e-3, "weight_decay": 0.05, "logit_scale_lr": 1e-2},
    # WiSE-FT: mix probe and fine-tuned weights, alpha picked on seen val only (empty: off)
    "wise": {"alphas": [], "tolerance": 0.01},
    # the stages after this run that make the shipped bundle (training/recipe.py); all empty: the config is one run.
    # Never inherited through 'base': a variant of the product's config is a run, not the product.
    "recipe": {"second_run_config": "", "soup_config": "", "soup_run": "", "dense_config": "", "dense_run": "",
               "distill_run": "", "distill_epoch": 0, "text_run": ""},
}


class ConfigError(ValueError):
    """A config file is malformed; the message names the file and the key."""


def _merge(base: dict, override: dict, where: str, path: Path) -> dict:
    out = copy.deepcopy(base)
    for key, value in override.items():
        if key not in base:
            raise ConfigError(f"{path}: unknown key {where}{key!r}")
        if isinstance(base[key], dict):
            if not isinstance(value, dict):
                raise ConfigError(f"{path}: {where}{key!r} must be a table")
            out[key] = _merge(base[key], value, f"{where}{key}.", path)
        else:
            _check_type(base[key], value, f"{where}{key}", path)
            out[key] = value
    return out


def _check_type(default, value, key: str, path: Path) -> None:
    """A value of the default's kind (any number where the default is a number); a None default takes anything."""
    number = (int, float)
    if default is None:
        return
    if isinstance(default, bool):
        ok, want = isinstance(value, bool), "true or false"
    elif isinstance(default, number):
        ok, want = isinstance(value, number) and not isinstance(value, bool), "a number"
    elif isinstance(default, str):
        ok, want = isinstance(value, str), "a string"
    elif isinstance(default, list):
        ok, want = isinstance(value, list), "a list"
    else:
        return
    if not ok:
        raise ConfigError(f"{path}: {key!r} must be {want}, got {value!r}")


def exit_on_config_error(main) -> None:
    """Run a training CLI's ``main``; a ConfigError (file and key) or a DatasetError (which data file or folder is
    missing or bad) ends it with its message, not a traceback."""
    from rsclip_geo.errors import DatasetError

    try:
        code = main()
    except (ConfigError, DatasetError) as exc:
        sys.exit(f"error: {exc}")
    sys.exit(code or 0)


def merge_config(defaults: dict, raw: dict, path: Path) -> dict:
    """``defaults`` updated by ``raw`` (a parsed TOML file at ``path``), unknown keys rejected by name."""
    return _merge(defaults, raw, "", Path(path))


def read_toml(path: Path) -> dict:
    """The parsed TOML file with its ``base`` chain applied; ConfigError naming the file when one is missing or bad.

    ``base = "other.toml"`` (relative to this file's folder) makes a config a short list of what differs from
    another one: tables merge key by key, and any other value (a list such as [[datasets]] included) replaces the
    base's whole value. Why: a variant that repeats its base in full drifts from it silently when the base changes.
    A ``[recipe]`` table is the one thing not inherited (training/recipe.py).
    """
    return _read_with_base(Path(path), ())


def base_chain(path: Path) -> list[Path]:
    """The files a config's ``base`` keys lead through, nearest first (empty when it has none): a run's record
    names them beside the config's own hash, since that hash alone does not cover what the config inherits."""
    chain, raw, here = [], _read_toml_file(Path(path)), Path(path)
    while isinstance(raw.get("base"), str):
        here = here.parent / raw["base"]
        if here.resolve() in {p.resolve() for p in chain} or len(chain) > 32:
            break  # read_toml names the loop
        chain.append(here)
        raw = _read_toml_file(here)
    return chain


def _read_toml_file(path: Path) -> dict:
    try:
        return tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"{path}: config file does not exist") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: invalid TOML ({exc})") from exc


def _read_with_base(path: Path, chain: tuple[Path, ...]) -> dict:
    here = path.resolve()
    if here in chain:
        names = " -> ".join(str(p) for p in (*chain, here))
        raise ConfigError(f"{path}: 'base' chain loops back on itself ({names})")
    raw = _read_toml_file(path)
    if "base" not in raw:
        return raw
    base = raw.pop("base")
    if not isinstance(base, str) or not base:
        raise ConfigError(f"{path}: 'base' must be the path of another config file, got {base!r}")
    base_path = path.parent / base
    if not base_path.is_file():
        raise ConfigError(f"{path}: 'base' file {base_path} does not exist")
    inherited = _read_with_base(base_path, (*chain, here))
    inherited.pop("recipe", None)  # a variant is a run: the product's recipe stays with the file that names it
    return _overlay(inherited, raw)


def _overlay(base: dict, top: dict) -> dict:
    """``base`` with ``top`` laid over it: tables merge recursively, every other value replaces."""
    out = copy.deepcopy(base)
    for key, value in top.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _overlay(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def load_config(path: Path) -> dict:
    """Defaults + the TOML file; [[datasets]] must list at least one entry with a 'kind'."""
    path = Path(path)
    cfg = _merge(DEFAULTS, read_toml(path), "", path)
    if not cfg["datasets"]:
        raise ConfigError(f"{path}: no [[datasets]] entries")
    for i, d in enumerate(cfg["datasets"]):
        if "kind" not in d:
            raise ConfigError(f"{path}: [[datasets]] #{i} has no 'kind'")
    recipe = cfg["recipe"]
    if recipe != DEFAULTS["recipe"]:
        missing = [k for k, v in recipe.items() if not v]
        if missing:
            raise ConfigError(f"{path}: [recipe] needs every key once it has one; missing: {', '.join(missing)}")
    return cfg
