"""Caption cleaning: known inputs -> exact kept captions and exact report counts."""

from pathlib import Path

from training.data.cleaning import CaptionCleaner, CleaningConfig, clean_captions, normalize_caption
from training.data.readers import CaptionRecord

GROUPS = [
    [
        "  Many  buildings are in a dense residential area. ",
        "many buildings are in a dense residential area",   # same after normalisation -> duplicate_in_image
        "",                                                 # empty
        "Image",                                            # boilerplate
        "no caption available",                             # boilerplate
        "two planes",                                       # too_few_words (2 < 3)
        "A\u200b plane is parked near the terminal.\u00a0",  # zero-width space and nbsp cleaned
        "Ã©glise near a river bank",                        # mojibake fixed
        "This is a placeholder caption",                    # boilerplate
    ],
    [
        "Many buildings are in a dense residential area!",  # duplicate of image 1 (only when dedupe_across)
        "a photo of",                                       # boilerplate
        "N/A",                                              # boilerplate
        " \t ",                                             # empty
        "Green trees surround the pond.",
    ],
]


def test_normalize_caption():
    assert normalize_caption(" a\u200b\u00a0b\tc\n") == "a b c"
    assert normalize_caption("ﬁelds") == "fields"  # NFKC ligature
    assert normalize_caption("Ã©glise") == "église"


def test_per_image_cleaning_exact():
    kept, report = clean_captions(GROUPS)
    assert kept == [
        ["Many buildings are in a dense residential area.", "A plane is parked near the terminal.",
         "église near a river bank"],
        ["Many buildings are in a dense residential area!", "Green trees surround the pond."],
    ]
    assert report.kept == 5
    assert dict(report.removed) == {"empty": 2, "boilerplate": 5, "too_few_words": 1, "duplicate_in_image": 1}
    assert report.examples["boilerplate"] == ["Image", "no caption available", "This is a placeholder caption",
                                              "a photo of", "N/A"]
    assert report.examples["duplicate_in_image"] == ["many buildings are in a dense residential area"]
    assert report.as_dict()["total_removed"] == 9


def test_dedupe_across_set_and_config():
    kept, report = clean_captions(GROUPS, CleaningConfig(dedupe_across=True, max_examples=1))
    assert kept[1] == ["Green trees surround the pond."]
    assert report.removed["duplicate_in_set"] == 1 and report.kept == 4
    assert report.examples["boilerplate"] == ["Image"]
    kept, report = clean_captions([["two planes", "an image", "Sunny beach"]],
                                  CleaningConfig(boilerplate=(r"sunny .*",), min_words=2))
    assert kept == [["two planes", "an image"]] and dict(report.removed) == {"boilerplate": 1}


def test_clean_records_drops_empty_images():
    records = [CaptionRecord(Path("a.jpg"), ("image", "placeholder"), "train", "a"),
               CaptionRecord(Path("b.jpg"), ("a bridge over a river", "A bridge over a river."), "train", "b")]
    cleaner = CaptionCleaner()
    out = list(cleaner.clean_records(records))
    assert out == [CaptionRecord(Path("b.jpg"), ("a bridge over a river",), "train", "b")]
    assert cleaner.report.images_dropped == 1
    assert dict(cleaner.report.removed) == {"boilerplate": 2, "duplicate_in_image": 1}
