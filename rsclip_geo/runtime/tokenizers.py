"""Torch-free text tokenizers that give the same ids as open_clip's.

An ONNX text encoder is only as right as the ids fed to it, so each class here
reproduces one open_clip tokenizer exactly (cleaning, splitting, special
tokens, truncation, padding) without importing torch or open_clip:

* :class:`ClipBpeTokenizer` -- OpenAI CLIP byte-pair encoding
  (``open_clip.tokenizer.SimpleTokenizer``), vocabulary in a ``.txt.gz`` file.
* :class:`HfJsonTokenizer` -- any Hugging Face fast tokenizer saved as
  ``tokenizer.json`` (``open_clip.tokenizer.HFTokenizer``: WordPiece,
  XLM-R sentencepiece/Unigram, ...), run by the ``tokenizers`` library.

:func:`load_tokenizer` picks the class from a bundle's :class:`TextSpec`.
"""

from __future__ import annotations

import gzip
import html
import os
from functools import lru_cache
from pathlib import Path
from typing import Callable, Protocol, Sequence, Union

import ftfy
import numpy as np
import regex

from .bundle import TOKENIZER_KINDS, TextSpec
from ..errors import TokenizerError

CLIP_BPE_FILE = "bpe_simple_vocab_16e6.txt.gz"
HF_TOKENIZER_FILE = "tokenizer.json"
DEFAULT_CONTEXT_LENGTH = 77

SOT_TOKEN = "<start_of_text>"
EOT_TOKEN = "<end_of_text>"
# open_clip keeps lines 1 .. 49152-256-2 of the vocab file (line 0 is a version header).
N_CLIP_MERGES = 49152 - 256 - 2
_MAX_CACHE = 100_000  # words; the cache is cleared when it grows past this

Texts = Union[str, Sequence[str]]


class TextTokenizer(Protocol):
    """What the runtime needs from a tokenizer."""

    context_length: int

    def __call__(self, texts: Texts) -> np.ndarray: ...


def default_bpe_path() -> Path:
    """The CLIP BPE vocabulary shipped with rsclip-geo (a copy of open_clip's)."""
    return Path(__file__).resolve().parents[1] / "data" / CLIP_BPE_FILE


# ---- text cleaning (open_clip.tokenizer.basic_clean / whitespace_clean) ------
def basic_clean(text: str) -> str:
    """Fix mojibake and (double-escaped) HTML entities, as open_clip does."""
    text = ftfy.fix_text(text)
    text = html.unescape(html.unescape(text))
    return text.strip()


def whitespace_clean(text: str) -> str:
    """Collapse every run of whitespace to one space."""
    return " ".join(text.split()).strip()


def clean_lower(text: str) -> str:
    """open_clip's ``clean='lower'`` (SimpleTokenizer default)."""
    return whitespace_clean(basic_clean(text)).lower()


def clean_whitespace(text: str) -> str:
    """open_clip's ``clean='whitespace'`` (HFTokenizer default): no lower-casing."""
    return whitespace_clean(basic_clean(text))


CLEANERS: dict[str, Callable[[str], str]] = {"lower": clean_lower, "whitespace": clean_whitespace}


def _cleaner(clean: str) -> Callable[[str], str]:
    try:
        return CLEANERS[clean]
    except KeyError:
        raise TokenizerError(f"unknown text cleaning {clean!r}; expected one of {tuple(CLEANERS)}") from None


def _as_texts(texts: Texts) -> list[str]:
    """A bare str is one text; anything else must be a sequence of str."""
    if isinstance(texts, str):
        return [texts]
    texts = list(texts)
    for i, t in enumerate(texts):
        if not isinstance(t, str):
            raise TypeError(f"texts[{i}] is {type(t).__name__}, expected str")
    return texts


def _check_context_length(context_length: int, file: Path) -> int:
    if isinstance(context_length, bool) or not isinstance(context_length, (int, np.integer)) or context_length < 2:
        raise TokenizerError(f"{file}: context_length must be an integer >= 2, got {context_length!r}")
    return int(context_length)


# ---- CLIP BPE -----------------------------------------------------------------
@lru_cache()
def bytes_to_unicode() -> dict[int, str]:
    """CLIP's reversible map from utf-8 bytes to printable unicode characters."""
    bs = (list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1))
          + list(range(ord("®"), ord("ÿ") + 1)))
    cs = bs[:]
    n = 0
    for b in range(2**8):
        if b not in bs:
            bs.append(b)
            cs.append(2**8 + n)
            n += 1
    return dict(zip(bs, (chr(c) for c in cs)))


def read_clip_merges(vocab_file: str | os.PathLike) -> list[tuple[str, str]]:
    """The BPE merges of a CLIP vocabulary file; TokenizerError if it is not one."""
    path = Path(vocab_file)
    if not path.is_file():
        raise TokenizerError(f"{path}: CLIP BPE vocabulary file is missing")
    try:
        with gzip.open(path, "rb") as fh:
            lines = fh.read().decode("utf-8").rstrip("\n").split("\n")
    except (OSError, EOFError, UnicodeDecodeError) as exc:
        raise TokenizerError(f"{path}: not a gzip-compressed CLIP BPE vocabulary ({exc})") from exc
    merges = []
    for lineno, line in enumerate(lines[1:N_CLIP_MERGES + 1], start=2):
        parts = tuple(line.split())
        if len(parts) != 2:
            raise TokenizerError(f"{path}: line {lineno} is not a BPE merge (two symbols): {line[:60]!r}")
        merges.append(parts)
    if len(merges) != N_CLIP_MERGES:
        raise TokenizerError(
            f"{path}: has {len(merges)} BPE merges, a CLIP vocabulary has {N_CLIP_MERGES} (truncated file?)"
        )
    return merges  # type: ignore[return-value]


class ClipBpeTokenizer:
    """OpenAI CLIP BPE, id for id with ``open_clip.tokenizer.SimpleTokenizer``.

    Texts are cleaned (ftfy, HTML unescape twice, whitespace collapse, lower
    case), split with CLIP's regex, byte-encoded and BPE-merged; each row is
    ``<start_of_text> ids <end_of_text>`` zero-padded to ``context_length``.
    A row that does not fit is cut to ``context_length`` and its last id is
    replaced by ``<end_of_text>``, as open_clip does.
    """

    def __init__(self, vocab_file: str | os.PathLike | None = None, context_length: int = DEFAULT_CONTEXT_LENGTH,
                 *, clean: str = "lower"):
        self.vocab_file = Path(vocab_file) if vocab_file is not None else default_bpe_path()
        self.context_length = _check_context_length(context_length, self.vocab_file)
        self._clean = _cleaner(clean)
        merges = read_clip_merges(self.vocab_file)

        self._byte_encoder = bytes_to_unicode()
        vocab = list(self._byte_encoder.values())
        vocab = vocab + [v + "</w>" for v in vocab]
        vocab.extend("".join(m) for m in merges)
        vocab.extend([SOT_TOKEN, EOT_TOKEN])
        self.encoder: dict[str, int] = dict(zip(vocab, range(len(vocab))))
        self._bpe_ranks = dict(zip(merges, range(len(merges))))
        self.vocab_size = len(self.encoder)
        self.sot_token_id = self.encoder[SOT_TOKEN]
        self.eot_token_id = self.encoder[EOT_TOKEN]
        self._specials = {SOT_TOKEN: (self.sot_token_id,), EOT_TOKEN: (self.eot_token_id,)}
        self._cache: dict[str, tuple[int, ...]] = dict(self._specials)
        self._pattern = regex.compile(
            f"{SOT_TOKEN}|{EOT_TOKEN}" + r"""|'s|'t|'re|'ve|'m|'ll|'d|[\p{L}]+|[\p{N}]|[^\s\p{L}\p{N}]+""",
            regex.IGNORECASE,
        )

    def _bpe(self, token: str) -> tuple[str, ...]:
        """Merge the byte-encoded ``token`` into BPE symbols (CLIP's greedy lowest-rank merge)."""
        word = tuple(token[:-1]) + (token[-1] + "</w>",)
        ranks = self._bpe_ranks
        while len(word) > 1:
            pairs = set(zip(word[:-1], word[1:]))
            bigram = min(pairs, key=lambda pair: ranks.get(pair, float("inf")))
            if bigram not in ranks:
                break
            first, second = bigram
            new_word: list[str] = []
            i = 0
            while i < len(word):
                try:
                    j = word.index(first, i)
                except ValueError:
                    new_word.extend(word[i:])
                    break
                new_word.extend(word[i:j])
                i = j
                if i < len(word) - 1 and word[i + 1] == second:
                    new_word.append(first + second)
                    i += 2
                else:
                    new_word.append(word[i])
                    i += 1
            word = tuple(new_word)
        return word

    def _word_ids(self, token: str) -> tuple[int, ...]:
        ids = self._cache.get(token)
        if ids is None:
            ids = tuple(self.encoder[s] for s in self._bpe(token))
            if len(self._cache) >= _MAX_CACHE:
                self._cache = dict(self._specials)
            self._cache[token] = ids
        return ids

    def encode(self, text: str) -> list[int]:
        """BPE ids of one text, without start/end tokens, padding or truncation."""
        ids: list[int] = []
        for word in self._pattern.findall(self._clean(text)):
            token = "".join(self._byte_encoder[b] for b in word.encode("utf-8"))
            ids.extend(self._word_ids(token))
        return ids

    def __call__(self, texts: Texts) -> np.ndarray:
        """int64 ids ``[len(texts), context_length]``; a bare str counts as one text."""
        texts = _as_texts(texts)
        ctx = self.context_length
        out = np.zeros((len(texts), ctx), dtype=np.int64)
        for row, text in enumerate(texts):
            ids = [self.sot_token_id] + self.encode(text) + [self.eot_token_id]
            if len(ids) > ctx:
                ids = ids[:ctx]
                ids[-1] = self.eot_token_id
            out[row, : len(ids)] = ids
        return out

    def __repr__(self) -> str:
        return f"ClipBpeTokenizer({str(self.vocab_file)!r}, context_length={self.context_length})"


# ---- Hugging Face tokenizer.json ---------------------------------------------
class HfJsonTokenizer:
    """A Hugging Face ``tokenizer.json``, id for id with open_clip's ``HFTokenizer``.

    open_clip cleans each text (ftfy, HTML unescape, whitespace collapse, no
    lower-casing: the tokenizer's own normalizer does that), then calls the
    transformers tokenizer with ``padding='max_length', truncation=True,
    max_length=context_length``; for a fast tokenizer that is exactly the Rust
    backend with right-side longest-first truncation and right padding with
    ``pad_id``, which is what runs here.
    """

    def __init__(self, tokenizer_json: str | os.PathLike, context_length: int, pad_id: int = 0,
                 *, clean: str = "whitespace"):
        self.tokenizer_file = Path(tokenizer_json)
        self.context_length = _check_context_length(context_length, self.tokenizer_file)
        self._clean = _cleaner(clean)
        if not self.tokenizer_file.is_file():
            raise TokenizerError(f"{self.tokenizer_file}: Hugging Face tokenizer file is missing")
        from tokenizers import Tokenizer  # core dependency; imported here to keep module import light

        try:
            tok = Tokenizer.from_file(str(self.tokenizer_file))
        except Exception as exc:  # the Rust side raises a bare Exception
            raise TokenizerError(f"{self.tokenizer_file}: not a valid Hugging Face tokenizer.json ({exc})") from exc
        n_vocab = tok.get_vocab_size(with_added_tokens=True)
        if isinstance(pad_id, bool) or not isinstance(pad_id, (int, np.integer)) or not 0 <= pad_id < n_vocab:
            raise TokenizerError(f"{self.tokenizer_file}: pad_id {pad_id!r} is not an id of this tokenizer "
                                 f"(vocabulary of {n_vocab})")
        self.pad_id = int(pad_id)
        try:
            tok.enable_truncation(max_length=self.context_length, stride=0, strategy="longest_first",
                                  direction="right")
            tok.enable_padding(direction="right", pad_id=self.pad_id, pad_type_id=0,
                               pad_token=tok.id_to_token(self.pad_id), length=self.context_length)
        except Exception as exc:
            raise TokenizerError(
                f"{self.tokenizer_file}: cannot truncate/pad to {self.context_length} ({exc})") from exc
        self._tokenizer = tok

    def __call__(self, texts: Texts) -> np.ndarray:
        """int64 ids ``[len(texts), context_length]``; a bare str counts as one text."""
        texts = [self._clean(t) for t in _as_texts(texts)]
        if not texts:
            return np.zeros((0, self.context_length), dtype=np.int64)
        encodings = self._tokenizer.encode_batch(texts, add_special_tokens=True)
        return np.asarray([e.ids for e in encodings], dtype=np.int64).reshape(len(texts), self.context_length)

    def __repr__(self) -> str:
        return (f"HfJsonTokenizer({str(self.tokenizer_file)!r}, context_length={self.context_length}, "
                f"pad_id={self.pad_id})")


# ---- factory --------------------------------------------------------------------
def load_tokenizer(spec: TextSpec, path: str | os.PathLike) -> TextTokenizer:
    """The tokenizer a bundle's ``text`` section asks for, reading the file at ``path``."""
    path = Path(path)
    if spec.tokenizer not in TOKENIZER_KINDS:
        raise TokenizerError(f"{path}: unknown tokenizer kind {spec.tokenizer!r} (field 'text.tokenizer'); "
                             f"expected one of {TOKENIZER_KINDS}")
    if not path.is_file():
        raise TokenizerError(f"{path}: tokenizer file is missing (kind {spec.tokenizer!r})")
    if spec.tokenizer == "clip_bpe":
        if spec.pad_id != 0:
            raise TokenizerError(f"{path}: field 'text.pad_id' must be 0 for clip_bpe "
                                 f"(open_clip pads CLIP BPE ids with zeros), got {spec.pad_id}")
        return ClipBpeTokenizer(path, spec.context_length)
    return HfJsonTokenizer(path, spec.context_length, spec.pad_id)
