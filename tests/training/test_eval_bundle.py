"""training/eval_bundle: the per-class limit draws as rsclip_geo.evaluation does."""

import numpy as np
import pytest

from rsclip_geo.evaluation.datasets import ImageFolderDataset
from training.eval_bundle import sample_per_class


def test_per_class_draw_matches_image_folder_dataset(tmp_path):
    counts = {"Airport": 7, "Beach": 3, "Bridge": 12}
    for name, n in counts.items():
        (tmp_path / name).mkdir()
        for i in range(n):
            (tmp_path / name / f"{name.lower()}_{i:02d}.jpg").write_bytes(b"")
    full = ImageFolderDataset.from_folder(tmp_path)
    limited = ImageFolderDataset.from_folder(tmp_path, limit_per_class=5, seed=0)
    paths, labels = sample_per_class(full.paths, full.labels.tolist(), 5)
    assert paths == limited.paths and labels == limited.labels.tolist()
    assert np.bincount(labels).tolist() == [5, 3, 5]
    assert sample_per_class(full.paths, full.labels.tolist(), 0) == (full.paths, full.labels.tolist())
    with pytest.raises(ValueError):
        sample_per_class(full.paths, full.labels.tolist(), -1)
