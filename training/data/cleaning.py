"""Caption cleaning ("purified text", as in CLIP-RS): drop captions that teach the model nothing.

Web-scale RS caption sets contain empty strings, placeholders ('no caption', 'image'), very short
fragments and repeated sentences; contrastive training on them adds noise and false negatives.
The cleaner normalises text, drops such captions, and keeps a report (counts per reason and a few
examples) so a training run can log exactly what was removed.

Checks run in this order and a caption is counted under the first that hits: empty, boilerplate,
too_few_words, duplicate_in_image, duplicate_in_set. Duplicates compare the normalised text
case-folded and without trailing punctuation; boilerplate patterns are regular expressions that
must match that whole comparison key.
"""

from __future__ import annotations

import re
import unicodedata
from collections import Counter
from dataclasses import dataclass, field, replace
from typing import Iterable, Iterator, Sequence

import ftfy

from .readers import CaptionRecord

EMPTY, BOILERPLATE, TOO_FEW_WORDS = "empty", "boilerplate", "too_few_words"
DUP_IMAGE, DUP_SET = "duplicate_in_image", "duplicate_in_set"

DEFAULT_BOILERPLATE = (
    r"(an? |the )?(image|photo|picture|img|pic)( of)?",
    r"(no|missing|empty) (caption|description|text)\b.*",
    r".*\bplaceholder\b.*",
    r".*\blorem ipsum\b.*",
    r"caption( here)?|n/?a|none|null|nan|untitled|todo|test|unknown",
)


@dataclass(frozen=True)
class CleaningConfig:
    """What counts as noise: boilerplate regexes, minimum word count, set-wide dedupe."""

    boilerplate: tuple[str, ...] = DEFAULT_BOILERPLATE
    min_words: int = 3
    dedupe_across: bool = False
    max_examples: int = 5


@dataclass
class CleaningReport:
    """Kept/removed caption counts per reason, a few removed examples, and images left with no caption."""

    kept: int = 0
    removed: Counter = field(default_factory=Counter)
    examples: dict[str, list[str]] = field(default_factory=dict)
    images_dropped: int = 0

    @property
    def total_removed(self) -> int:
        return sum(self.removed.values())

    def as_dict(self) -> dict:
        """JSON-ready summary for the training log."""
        return {"kept": self.kept, "removed": dict(self.removed), "total_removed": self.total_removed,
                "images_dropped": self.images_dropped, "examples": {k: list(v) for k, v in self.examples.items()}}


def normalize_caption(text: str) -> str:
    """Fix mojibake, NFKC, drop control/format characters (zero-width, BOM), collapse whitespace."""
    text = unicodedata.normalize("NFKC", ftfy.fix_text(str(text)))
    text = "".join(" " if unicodedata.category(ch) == "Cc" else ch for ch in text
                   if unicodedata.category(ch) != "Cf")
    return re.sub(r"\s+", " ", text).strip()


def _key(text: str) -> str:
    return re.sub(r"[\s.!?;:,]+$", "", text.casefold())


class CaptionCleaner:
    """Stateful cleaner: one report across many images, and the set-wide duplicate memory."""

    def __init__(self, config: CleaningConfig | None = None):
        self.config = config or CleaningConfig()
        self._patterns = [re.compile(p) for p in self.config.boilerplate]
        self._seen: set[str] = set()
        self.report = CleaningReport()

    def _drop(self, reason: str, raw: str) -> None:
        self.report.removed[reason] += 1
        examples = self.report.examples.setdefault(reason, [])
        if len(examples) < self.config.max_examples:
            examples.append(raw)

    def clean(self, captions: Sequence[str]) -> list[str]:
        """Kept (normalised) captions of one image, in input order."""
        kept, in_image = [], set()
        for raw in captions:
            text = normalize_caption(raw)
            key = _key(text)
            if not key:
                self._drop(EMPTY, raw)
            elif any(p.fullmatch(key) for p in self._patterns):
                self._drop(BOILERPLATE, raw)
            elif len(re.findall(r"\w+", text)) < self.config.min_words:
                self._drop(TOO_FEW_WORDS, raw)
            elif key in in_image:
                self._drop(DUP_IMAGE, raw)
            elif self.config.dedupe_across and key in self._seen:
                self._drop(DUP_SET, raw)
            else:
                in_image.add(key)
                self._seen.add(key)
                kept.append(text)
        self.report.kept += len(kept)
        return kept

    def clean_records(self, records: Iterable[CaptionRecord]) -> Iterator[CaptionRecord]:
        """Records with cleaned captions; a record left with none is dropped and counted."""
        for record in records:
            kept = self.clean(record.captions)
            if kept:
                yield replace(record, captions=tuple(kept))
            else:
                self.report.images_dropped += 1


def clean_captions(groups: Iterable[Sequence[str]], config: CleaningConfig | None = None
                   ) -> tuple[list[list[str]], CleaningReport]:
    """Clean captions given per image (a list of caption lists); returns kept lists and the report."""
    cleaner = CaptionCleaner(config)
    return [cleaner.clean(g) for g in groups], cleaner.report
