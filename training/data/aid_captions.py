"""Training captions for the 30 AID classes: readable names, synonyms and short descriptions.

Why: with a locked text tower the image tower learns to land on the caption embeddings; several
wordings per class spread those targets out in MiniLM's space instead of 24 single points, and
descriptive words (water, sand, ships, tracks...) are what carry over to class names never trained on.
The held-out-classes ablation (training/configs/ablation_heldout_classes.toml, the v1 split) trains on 24 classes;
there no caption may name one of the six unseen classes (checked by `check_no_unseen_words`).
"""

from __future__ import annotations

import re

try:  # the runtime's generic templates; training adds more wordings around them
    from rsclip_geo.runtime.prompts import DEFAULT_TEMPLATES, humanize_class_name
except ImportError:  # pragma: no cover - only if the runtime package is absent
    DEFAULT_TEMPLATES = ("a satellite photo of {}.", "an aerial photo of {}.", "a remote sensing image of {}.")

    def humanize_class_name(name: str) -> str:
        return re.sub(r"(?<=[a-z0-9])(?=[A-Z])", " ", name).lower()

TRAIN_TEMPLATES: tuple[str, ...] = tuple(DEFAULT_TEMPLATES) + (
    "{}.",
    "a picture of {}.",
    "satellite imagery of {}.",
    "an aerial image showing {}.",
    "a bird's eye view of {}.",
    "an image of {} taken from above.",
    "a google earth image of {}.",
)

# Phrases are noun phrases that go into the templates; the first is the plain class name.
AID_PHRASES: dict[str, tuple[str, ...]] = {
    "Airport": ("an airport", "an airfield", "airport runways and taxiways", "an airport terminal with parked airplanes",
                "a runway with aircraft"),
    "Beach": ("a beach", "a sandy beach", "a seashore", "a coastline with sand and waves", "a sandy shore by the sea"),
    "Bridge": ("a bridge", "a bridge over a river", "a road bridge crossing water", "a long bridge across a river",
               "a bridge spanning a waterway"),
    "Desert": ("a desert", "sand dunes", "a sandy desert", "arid desert land", "dry desert terrain"),
    "Pond": ("a pond", "a small lake", "ponds", "a pond surrounded by land", "fish ponds"),
    "Stadium": ("a stadium", "a sports stadium", "an arena", "a stadium with a field and stands",
                "a large oval sports venue"),
    "BareLand": ("bare land", "barren land", "bare soil", "an empty unvegetated lot", "dry bare ground",
                 "open land without plants"),
    "BaseballField": ("a baseball field", "baseball diamonds", "a ballpark with a diamond-shaped infield",
                      "a sports field for baseball"),
    "Center": ("a center", "a city center", "a large round building complex", "a civic center",
               "a convention center building"),
    "Church": ("a church", "a church building", "a cathedral", "a chapel with a cross-shaped roof",
               "a religious building in a town"),
    "Commercial": ("a commercial area", "commercial buildings", "a business district", "shops and offices",
                   "a downtown area with large buildings"),
    "DenseResidential": ("a dense residential area", "densely packed houses", "a crowded neighborhood",
                         "tightly packed homes and narrow streets", "dense housing"),
    "Farmland": ("farmland", "cropland", "agricultural fields", "cultivated fields", "farm fields with crops",
                 "rectangular crop plots"),
    "Forest": ("a forest", "woodland", "dense trees", "a tree canopy", "woods"),
    "Industrial": ("an industrial area", "factories", "an industrial zone with warehouses",
                   "factory buildings", "a manufacturing plant"),
    "Meadow": ("a meadow", "grassland", "a grassy field", "green pasture", "open grass"),
    "MediumResidential": ("a medium residential area", "a residential area", "suburban houses with yards",
                          "a neighborhood of houses and streets", "moderately spaced homes"),
    "Mountain": ("a mountain", "mountains", "mountain ridges", "rugged hills", "steep mountain terrain"),
    "Park": ("a park", "a city park", "a public park with trees and paths", "green space in a city",
             "a garden with lawns"),
    "Parking": ("a parking lot", "a car park", "many parked cars", "a parking area", "rows of parked vehicles"),
    "Playground": ("a playground", "a running track around a sports field", "a school sports ground",
                   "an athletics track", "a soccer field with a track"),
    "Port": ("a port", "a harbor", "a harbour with docked ships", "boats moored at piers", "a marina",
             "ships at a dock"),
    "RailwayStation": ("a railway station", "a train station", "railway tracks and platforms",
                       "a railroad station", "many railway lines"),
    "Resort": ("a resort", "a holiday resort", "a hotel with swimming pools", "vacation villas",
               "a leisure resort with gardens"),
    "River": ("a river", "a winding river", "a stream", "river water flowing through land", "a riverbank"),
    "School": ("a school", "a school campus", "school buildings with a sports ground", "a university campus",
               "a college"),
    "SparseResidential": ("a sparse residential area", "scattered houses", "a rural neighborhood",
                          "isolated homes among trees", "detached houses with large gardens"),
    "Square": ("a square", "a city square", "a public plaza", "an open paved plaza", "a town square"),
    "StorageTanks": ("storage tanks", "oil tanks", "round storage tanks", "fuel storage tanks",
                     "cylindrical tanks at a depot"),
    "Viaduct": ("a viaduct", "an elevated highway", "an overpass", "a highway interchange",
                "elevated roads crossing each other"),
}

# Whole-sentence descriptions of what each class typically looks like from above.
AID_DESCRIPTIONS: dict[str, tuple[str, ...]] = {
    "Airport": ("Long grey runways and taxiways with airplanes parked near a terminal building.",
                "An airfield with a straight runway, aprons and white aircraft seen from above."),
    "Beach": ("A strip of light sand between the blue sea and the land, with waves along the shore.",
              "A sandy coastline with the sea on one side, seen from above."),
    "Bridge": ("A bridge carrying a road across a river, with water on both sides.",
               "A long narrow bridge spanning a wide river between two banks."),
    "Desert": ("Dry yellow sand with dune ridges and no vegetation or buildings.",
               "Arid desert terrain with wind-shaped sand patterns seen from above."),
    "Pond": ("A small body of still water surrounded by fields or trees.",
             "Several ponds of dark water separated by narrow earth banks."),
    "Stadium": ("A large oval stadium with a green sports field surrounded by stands.",
                "A sports arena with tiers of seats around a playing field, seen from above."),
    "BareLand": ("An aerial photo of bare brown soil with no vegetation.",
                 "Empty dry ground with a few tracks and sparse shrubs, seen from above."),
    "BaseballField": ("A diamond-shaped infield of brown dirt and green grass seen from above.",
                      "Several baseball diamonds next to each other with green outfields."),
    "Center": ("A large round building with a domed roof surrounded by plazas and roads.",
               "A big public building complex with parking and paved open space around it."),
    "Church": ("A church with a cross-shaped roof among town buildings.",
               "A large old religious building with a steep roof and a tower in a town."),
    "Commercial": ("Blocks of large commercial buildings with flat roofs along busy streets.",
                   "Shops, offices and parking lots in a business district seen from above."),
    "DenseResidential": ("Rows of small houses packed closely together along narrow streets.",
                         "A crowded residential area with many small roofs and almost no green space."),
    "Farmland": ("A patchwork of rectangular green and brown crop fields.",
                 "Agricultural land with plowed fields and straight field boundaries."),
    "Forest": ("A dense green tree canopy covering the whole image.",
               "Woodland with thick trees and no buildings, seen from above."),
    "Industrial": ("Large factory halls and warehouses with flat roofs and storage yards.",
                   "An industrial zone with big grey buildings, trucks and paved lots."),
    "Meadow": ("A smooth green grassy field without trees or buildings.",
               "Open grassland with soft green and yellow tones."),
    "MediumResidential": ("Houses with gardens arranged along curved suburban streets.",
                          "A suburban neighborhood of detached homes, lawns and trees."),
    "Mountain": ("Rugged mountain slopes with ridges, valleys and shadows.",
                 "Steep rocky hills and mountain ridges seen from above."),
    "Park": ("Green lawns, trees and winding footpaths in the middle of a city.",
             "A city park with grass, trees, paths and small buildings."),
    "Parking": ("Many cars parked in neat rows on a large paved lot.",
                "A big parking area full of vehicles next to a building."),
    "Playground": ("An oval red running track around a green soccer field.",
                   "A sports ground with an athletics track and a grass pitch."),
    "Port": ("Ships and boats docked at piers in sea water next to the coast.",
             "A harbor with cargo ships, cranes and long piers in the water."),
    "RailwayStation": ("Many parallel railway tracks leading to long station platforms and roofs.",
                       "A train station with several rail lines and trains seen from above."),
    "Resort": ("Villas and hotels with blue swimming pools, palm trees and gardens.",
               "A holiday resort with pools, lawns and guest buildings."),
    "River": ("A winding river of water flowing between green banks.",
              "A wide river crossing the land with fields and trees along its banks."),
    "School": ("School buildings next to a running track and sports fields.",
               "A campus with classroom buildings, courtyards and a playing field."),
    "SparseResidential": ("A few detached houses scattered among trees and fields.",
                          "Isolated homes with large yards in a rural area."),
    "Square": ("A large open paved public square surrounded by buildings.",
               "A city plaza with patterned paving and a few trees."),
    "StorageTanks": ("Groups of round white storage tanks at an oil depot.",
                     "Many cylindrical fuel tanks seen from above at an industrial site."),
    "Viaduct": ("Elevated highways and ramps crossing each other at an interchange.",
                "A long elevated road on pillars above the ground, seen from above."),
}

# Unseen class names and their closest synonyms: never in a training caption.
UNSEEN_WORDS = ("airport", "airfield", "airstrip", "runway", "beach", "seashore", "bridge", "desert", "dune",
                "pond", "lake", "stadium", "arena")


def class_captions(name: str, templates: tuple[str, ...] = TRAIN_TEMPLATES, rich: bool = True,
                   description_share: float = 0.0) -> list[str]:
    """Training captions of one AID class: templates x phrases (rich) or templates x readable name.

    description_share > 0 adds the class's whole-sentence descriptions, repeated so that about that
    fraction of uniformly sampled captions is a description.
    """
    if rich:
        if name not in AID_PHRASES:
            raise KeyError(f"no caption phrases for AID class {name!r}")
        phrases = AID_PHRASES[name]
    else:
        phrases = (humanize_class_name(name),)
    caps = [t.format(p) for p in phrases for t in templates]
    if description_share > 0:
        desc = list(AID_DESCRIPTIONS[name])
        reps = max(1, round(description_share * len(caps) / ((1 - description_share) * len(desc))))
        caps += desc * reps
    return caps


def check_no_unseen_words(captions: list[str], words: tuple[str, ...] = UNSEEN_WORDS) -> None:
    """Raise if a caption mentions an unseen class (keeps the zero-shot test honest)."""
    pattern = re.compile(r"\b(" + "|".join(words) + r")(s|es)?\b", re.IGNORECASE)
    bad = [c for c in captions if pattern.search(c)]
    if bad:
        raise ValueError(f"training captions name unseen classes: {bad[:5]}")
