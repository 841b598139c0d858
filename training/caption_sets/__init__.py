"""Retrieval caption sets built from the shared data, written in RSICD's Karpathy JSON format.

    .venv/bin/python -m training.caption_sets rs-b2c --out runs/caption_sets/rs-b2c
    .venv/bin/python -m training.caption_sets aid-heldout --out runs/caption_sets/aid-heldout

rs-b2c (rs_b2c.py): chips of the two DOTA images and the SpaceNet chip with five Box-to-Caption
captions each. aid-heldout (aid_heldout.py): the AID images never trained on, captioned from the class
name with templates training never used. Each set folder holds the caption JSON file(s), the image
files and info.json (how it was built, and the recall ceilings of ceilings.py).
"""
