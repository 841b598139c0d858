"""Known checkpoints: where each comes from, how to build it, and under which licence.

Torch-free. The activation is recorded per checkpoint because QuickGELU vs GELU
is not stored in the weights (see rsclip_geo.export.arch). Facts and their sources:

* RemoteCLIP (Liu, Chen et al. 2023): repo ``chendelong/RemoteCLIP``, files
  ``RemoteCLIP-{RN50,ViT-B-32,ViT-L-14}.pt`` -- the ``hf_hub_download`` snippet in the
  README of github.com/ChenDelong1999/RemoteCLIP; the HF file listing shows plain
  OrderedDict state dicts (408 MB / 605 MB / 1.71 GB). Architectures are the open_clip
  names the README passes to ``create_model_and_transforms``. Activation: RemoteCLIP is
  OpenAI CLIP fine-tuned with the ITRA codebase (README), i.e. QuickGELU; the README's
  plain ``create_model_and_transforms('ViT-B-32')`` builds GELU, the silent mismatch
  described in open_clip issue #771. Licence: neither the HF repo (no model-card
  licence) nor the GitHub repo (no LICENSE file) declares one.
* GeoRSCLIP (RS5M, Zhang et al. 2023): repo ``Zilun/GeoRSCLIP``, file
  ``ckpt/RS5M_ViT-B-32.pt`` -- HF tree ``ckpt/`` (605 MB OrderedDict pickle) and the
  model card, which loads it into ``create_model_and_transforms("ViT-B/32",
  pretrained="openai")`` (the 'openai' tag builds QuickGELU). Licence cc-by-4.0: model
  card metadata (HF commit 76302bb).
* OpenAI CLIP ViT-B/32: repo ``timm/vit_base_patch32_clip_224.openai``, file
  ``open_clip_model.safetensors`` -- open_clip's pretrained table (``hf_hub`` of the
  'openai' tag, QuickGELU) and the HF file listing. Licence: MIT for OpenAI's CLIP
  release (github.com/openai/CLIP LICENSE); the timm repo is tagged apache-2.0.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from ..errors import BundleError
from ..runtime.paths import DEFAULT_MODEL_DIR, DEFAULT_MODEL_NAME, pulled_models_dir

HF_DEFAULT_ENDPOINT = "https://huggingface.co"
# OpenAI CLIP preprocessing (open_clip.constants); every catalog checkpoint is OpenAI-derived.
OPENAI_MEAN = (0.48145466, 0.4578275, 0.40821073)
OPENAI_STD = (0.26862954, 0.26130258, 0.27577711)


@dataclass(frozen=True)
class CatalogEntry:
    """One known checkpoint (``kind='hf'``) or the bundle shipped with rsclip-geo (``kind='shipped'``)."""

    name: str
    title: str
    architecture: str  # open_clip model name ("" for the shipped bundle: read its model.json)
    activation: str  # "quick_gelu" | "gelu" | "" (towers define their own)
    license: str
    kind: str = "hf"
    repo: str = ""
    file: str = ""
    revision: str = "main"
    homepage: str = ""
    citation: str = ""
    mean: tuple[float, float, float] = OPENAI_MEAN
    std: tuple[float, float, float] = OPENAI_STD
    interpolation: str = "bicubic"

    def preprocess(self) -> dict:
        """Image preprocessing the checkpoint was trained with (a checkpoint file does not say)."""
        return {"mean": self.mean, "std": self.std, "interpolation": self.interpolation}

    def url(self, endpoint: str | None = None) -> str:
        """Direct download URL of the checkpoint file ("" for the shipped bundle)."""
        if self.kind != "hf":
            return ""
        base = (endpoint or HF_DEFAULT_ENDPOINT).rstrip("/")
        return f"{base}/{self.repo}/resolve/{self.revision}/{self.file}"

    def source(self) -> dict[str, str]:
        """What an exported bundle records under ``source``."""
        if self.kind != "hf":
            return {"shipped": "rsclip_geo/models/default"}
        return {"repo": self.repo, "file": self.file, "revision": self.revision, "url": self.url(),
                "homepage": self.homepage, "catalog_name": self.name}


_NO_LICENCE = "not declared by the authors (weights derived from OpenAI CLIP, MIT)"
_REMOTECLIP_HOME = "https://github.com/ChenDelong1999/RemoteCLIP"
_REMOTECLIP_CITE = ("Liu, Chen et al. RemoteCLIP: A Vision Language Foundation Model for Remote Sensing. "
                    "arXiv 2306.11029")

ENTRIES: tuple[CatalogEntry, ...] = (
    CatalogEntry(
        name=DEFAULT_MODEL_NAME, title="rsclip-geo default model (shipped bundle)", architecture="",
        activation="", license="see the bundle's model.json", kind="shipped",
    ),
    CatalogEntry(
        name="remoteclip-rn50", title="RemoteCLIP ResNet-50", architecture="RN50", activation="quick_gelu",
        license=_NO_LICENCE, repo="chendelong/RemoteCLIP", file="RemoteCLIP-RN50.pt",
        homepage=_REMOTECLIP_HOME, citation=_REMOTECLIP_CITE,
    ),
    CatalogEntry(
        name="remoteclip-vit-b-32", title="RemoteCLIP ViT-B/32", architecture="ViT-B-32", activation="quick_gelu",
        license=_NO_LICENCE, repo="chendelong/RemoteCLIP", file="RemoteCLIP-ViT-B-32.pt",
        homepage=_REMOTECLIP_HOME, citation=_REMOTECLIP_CITE,
    ),
    CatalogEntry(
        name="remoteclip-vit-l-14", title="RemoteCLIP ViT-L/14", architecture="ViT-L-14", activation="quick_gelu",
        license=_NO_LICENCE, repo="chendelong/RemoteCLIP", file="RemoteCLIP-ViT-L-14.pt",
        homepage=_REMOTECLIP_HOME, citation=_REMOTECLIP_CITE,
    ),
    CatalogEntry(
        name="georsclip-vit-b-32", title="GeoRSCLIP ViT-B/32 (RS5M)", architecture="ViT-B-32",
        activation="quick_gelu", license="cc-by-4.0", repo="Zilun/GeoRSCLIP", file="ckpt/RS5M_ViT-B-32.pt",
        homepage="https://github.com/om-ai-lab/RS5M",
        citation="Zhang et al. RS5M and GeoRSCLIP. arXiv 2306.11300",
    ),
    CatalogEntry(
        name="openai-vit-b-32", title="OpenAI CLIP ViT-B/32", architecture="ViT-B-32", activation="quick_gelu",
        license="MIT (OpenAI CLIP release; the timm HF repo is tagged apache-2.0)",
        repo="timm/vit_base_patch32_clip_224.openai", file="open_clip_model.safetensors",
        homepage="https://github.com/openai/CLIP",
        citation="Radford et al. Learning Transferable Visual Models From Natural Language Supervision. ICML 2021",
    ),
)


def list_entries() -> list[CatalogEntry]:
    return list(ENTRIES)


def get_entry(name: str) -> CatalogEntry:
    for entry in ENTRIES:
        if entry.name == name:
            return entry
    known = ", ".join(e.name for e in ENTRIES)
    raise BundleError(f"unknown model name {name!r}; known models: {known} (see `rsclip-geo models list`)")


def bundle_dir(entry: CatalogEntry) -> Path:
    """Where this entry's bundle lives (shipped folder, or the user cache for pulled ones)."""
    return DEFAULT_MODEL_DIR if entry.kind == "shipped" else pulled_models_dir() / entry.name


def status(entry: CatalogEntry) -> str:
    """'shipped' / 'not built' for the default; 'pulled' / 'not pulled' for the others."""
    present = (bundle_dir(entry) / "model.json").is_file()
    if entry.kind == "shipped":
        return "shipped" if present else "not built"
    return "pulled" if present else "not pulled"
