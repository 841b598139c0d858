"""Readable singular/plural class names and count phrases, so generated captions read like English.

Dataset labels come as 'small-vehicle', 'storage_tank' or 'DenseResidential'; captions need
'a small vehicle', 'two storage tanks', 'many harbors'.
"""

from __future__ import annotations

import re

NUMBER_WORDS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten")
MANY_ABOVE = 10  # RemoteCLIP B2C: counts above ten are written as "many"

# Whole-label overrides where the generic rule would read badly.
LABEL_OVERRIDES = {
    "plane": ("plane", "planes"),
    "harbor": ("harbor", "harbors"),
    "soccer-ball-field": ("soccer field", "soccer fields"),
}
_IRREGULAR = {"person": "people", "man": "men", "woman": "women", "child": "children", "leaf": "leaves"}
_INVARIANT = {"aircraft", "sheep", "fish", "deer", "series", "species", "vegetation", "water", "farmland"}


def humanize(label: str) -> str:
    """'small-vehicle' / 'storage_tank' / 'DenseResidential' -> 'small vehicle' / 'storage tank' / 'dense residential'."""
    text = re.sub(r"(?<=[a-z0-9])(?=[A-Z])", " ", label.strip())
    text = re.sub(r"[-_\s]+", " ", text)
    return text.strip().lower()


def pluralize_word(word: str) -> str:
    """English plural of one noun with the regular rules plus a few irregulars."""
    if word in _INVARIANT:
        return word
    if word in _IRREGULAR:
        return _IRREGULAR[word]
    if re.search(r"(s|x|z|ch|sh)$", word):
        return word + "es"
    if re.search(r"[^aeiou]y$", word):
        return word[:-1] + "ies"
    return word + "s"


def readable_name(label: str) -> tuple[str, str]:
    """(singular, plural) for a dataset label; only the last word of a compound is pluralized."""
    key = label.strip().lower().replace("_", "-")
    if key in LABEL_OVERRIDES:
        return LABEL_OVERRIDES[key]
    singular = humanize(label)
    head, _, last = singular.rpartition(" ")
    plural = f"{head} {pluralize_word(last)}".strip()
    return singular, plural


def article(noun_phrase: str) -> str:
    """'a' or 'an' by the first letter (good enough for class names)."""
    return "an" if noun_phrase[:1] in "aeiou" else "a"


def count_word(n: int) -> str:
    """'one'..'ten', 'many' above ten."""
    if n < 0:
        raise ValueError(f"count must be >= 0, got {n}")
    return "many" if n > MANY_ABOVE else NUMBER_WORDS[n]


def count_phrase(n: int, label: str) -> str:
    """1 -> 'a ship', 3 -> 'three ships', 14 -> 'many ships' (n >= 1)."""
    singular, plural = readable_name(label)
    if n == 1:
        return f"{article(singular)} {singular}"
    return f"{count_word(n)} {plural}"


def join_phrases(phrases: list[str]) -> str:
    """['a', 'b', 'c'] -> 'a, b and c'."""
    if len(phrases) <= 1:
        return "".join(phrases)
    return ", ".join(phrases[:-1]) + " and " + phrases[-1]
