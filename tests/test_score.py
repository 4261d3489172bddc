"""Densities and anomaly maps (`ssad.score`), against independent computations."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from ssad.config import ScoreConfig
from ssad.model import create_model
from ssad.score import (
    PATCH_SCORERS,
    GaussianDensity,
    KNNDensity,
    PatchGaussian,
    PatchKNN,
    create_density,
    create_patch_scorer,
    gaussian_blur,
    greedy_coreset,
    ledoit_wolf,
)


def _ledoit_wolf_textbook(x: np.ndarray) -> float:
    """Shrinkage intensity from Ledoit & Wolf (2004), eq. 14-15, written sample by sample."""
    n, p = x.shape
    x = x - x.mean(axis=0)
    s = x.T @ x / n
    m = np.trace(s) / p
    d2 = np.sum((s - m * np.eye(p)) ** 2) / p
    b2_bar = sum(np.sum((np.outer(row, row) - s) ** 2) / p for row in x) / n**2
    return min(b2_bar, d2) / d2


@pytest.mark.parametrize("correlated", [False, True])
def test_ledoit_wolf_matches_the_textbook_formula(correlated):
    g = torch.Generator().manual_seed(0)
    x = torch.randn(60, 12, generator=g, dtype=torch.float64)
    if correlated:
        x = x @ torch.randn(12, 12, generator=g, dtype=torch.float64)
    mean, cov, shrinkage = ledoit_wolf(x)
    assert shrinkage == pytest.approx(_ledoit_wolf_textbook(x.numpy()), rel=1e-9)
    assert torch.allclose(mean, x.mean(0))
    emp = torch.cov(x.T, correction=0)
    mu = emp.diagonal().mean()
    assert torch.allclose(cov, (1 - shrinkage) * emp + shrinkage * mu * torch.eye(12, dtype=torch.float64))
    if correlated:
        assert shrinkage < 0.3  # real structure: keep most of the sample covariance
    else:
        assert shrinkage > 0.3  # white noise: the isotropic target is close to the truth


def test_gaussian_density_scores_outliers_higher():
    g = torch.Generator().manual_seed(1)
    normal = torch.randn(500, 16, generator=g) * 0.1 + torch.ones(16)
    density = GaussianDensity().fit(normal)
    inliers = torch.randn(50, 16, generator=g) * 0.1 + torch.ones(16)
    outliers = inliers.clone()
    outliers[:, :8] *= -1  # a different direction after L2 normalisation
    assert density.score(outliers).min() > density.score(inliers).max()


def test_knn_density_hand_case():
    bank = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0], [-1.0, 0.0]])
    density = KNNDensity(k=2).fit(bank)
    # Query (1, 0): cosine similarities 1, 0, 0.7071, -1; the two nearest average (1 + 0.7071) / 2.
    score = density.score(torch.tensor([[3.0, 0.0]]))
    assert score.item() == pytest.approx(1 - (1 + 2**-0.5) / 2, abs=1e-6)
    with pytest.raises(ValueError, match="at least 5"):
        KNNDensity(k=5).fit(bank)
    with pytest.raises(ValueError, match="unknown density"):
        create_density("parzen")


def test_gaussian_blur_keeps_constants_and_spreads_a_peak():
    flat = torch.full((1, 1, 20, 20), 3.0)
    assert torch.allclose(gaussian_blur(flat, 2.0), flat)
    peak = torch.zeros(1, 1, 21, 21)
    peak[..., 10, 10] = 1
    blurred = gaussian_blur(peak, 2.0)
    assert blurred.sum().item() == pytest.approx(1.0, abs=1e-4)
    assert blurred[..., 10, 10] == blurred.max() and blurred[..., 10, 12] > 0


@pytest.mark.parametrize("name", PATCH_SCORERS)
def test_every_patch_scorer_lights_up_a_foreign_patch(name):
    torch.manual_seed(0)
    model = create_model("scratch")[0]
    g = torch.Generator().manual_seed(2)
    low = torch.rand(24, 3, 8, 8, generator=g) * 0.2 + 0.4
    images = (F.interpolate(low, size=64, mode="bilinear", align_corners=False) * 255).to(torch.uint8)
    scorer = create_patch_scorer(name, channels=32, sigma=1.0).fit(model, images[:20])
    test = images[20:].clone()
    test[0, :, 8:24, 36:52] = 255  # a bright square in the top right
    maps = scorer.score(model, test)
    assert maps.shape == (4, 1, 64, 64)
    inside, outside = maps[0, 0, 8:24, 36:52].mean(), maps[0, 0, 40:, :24].mean()
    assert inside > 2 * outside
    assert maps[0].max() > maps[1:].max()


def test_feature_maps_run_only_as_deep_as_asked():
    torch.manual_seed(0)
    model = create_model("scratch")[0].eval()
    x = torch.rand(2, 3, 64, 64)
    every, shallow = model.feature_maps(x), model.feature_maps(x, layers=("layer2", "layer1"))
    assert list(every) == ["layer1", "layer2", "layer3"] and list(shallow) == ["layer1", "layer2"]
    assert every["layer3"].shape == (2, 256, 4, 4)
    for name in shallow:  # the same operations on the same input
        torch.testing.assert_close(shallow[name], every[name], rtol=0, atol=0)


def test_map_channels_are_read_from_the_network():
    """The channel counts the patch scorers validate and sample from are those of the maps."""
    model = create_model("scratch")[0]
    maps = model.feature_maps(torch.rand(1, 3, 64, 64))
    assert model.map_channels() == {name: m.shape[1] for name, m in maps.items()}
    assert PatchGaussian(layers=("layer2", "layer1")).channels == 192


def test_patch_scorer_factory_and_arguments_are_checked():
    assert isinstance(create_patch_scorer("shared"), PatchGaussian) and create_patch_scorer("shared").shared
    assert isinstance(create_patch_scorer("knn", memory=5), PatchKNN)
    with pytest.raises(ValueError, match="layers"):
        create_patch_scorer("per_location", layers=("layer9",))
    with pytest.raises(ValueError, match="unknown patch scorer 'nearest'"):
        create_patch_scorer("nearest")
    with pytest.raises(ValueError, match="memory"):
        create_patch_scorer("knn", memory=0)
    assert create_patch_scorer("knn").channels == 192  # 0, the default: all of layer2's and layer1's
    assert create_patch_scorer("knn", layers=("layer2",), channels=40).channels == 40
    with pytest.raises(ValueError, match="have 128; keep between 1 and 128, or 0 for all"):
        create_patch_scorer("knn", layers=("layer2",), channels=192)
    with pytest.raises(ValueError, match="patch_channels=-1"):
        ScoreConfig(patch_channels=-1)


def test_knn_scorer_does_not_assume_alignment():
    """A pattern that moves between training images is normal anywhere for the memory, but not
    for a Gaussian per location, which saw it at one place only."""
    torch.manual_seed(0)
    model = create_model("scratch")[0]
    g = torch.Generator().manual_seed(3)
    images = torch.full((17, 3, 64, 64), 100, dtype=torch.uint8)
    images += (torch.rand(17, 1, 64, 64, generator=g) * 20).to(torch.uint8)
    for i in range(16):  # a bright bar at one of two places
        top = 8 + 32 * (i % 2)
        images[i, :, top : top + 8, 8:56] = 220
    test = images[16:].clone()
    test[0, :, 24:32, 8:56] = 220  # the bar, between them, on layer2's 8-pixel grid
    ratios = {}
    for name in ("per_location", "knn"):
        maps = create_patch_scorer(name, channels=32, sigma=1.0).fit(model, images[:16]).score(model, test)
        ratios[name] = maps[0, 0, 24:32, 16:48].mean() / maps[0, 0, 48:, :].mean()
    assert ratios["knn"] < 0.5 * ratios["per_location"]


def test_greedy_coreset_covers_rare_points_and_is_bounded():
    g = torch.Generator().manual_seed(0)
    crowd = torch.randn(2000, 8, generator=g) * 0.1
    outliers = torch.randn(5, 8, generator=g) * 0.1 + 10 * torch.eye(8)[:5]
    points = torch.cat([crowd, outliers])
    chosen = greedy_coreset(points, 50, seed=1, projection=32)
    assert chosen.shape == (50,) and chosen.unique().numel() == 50
    assert set(range(2000, 2005)) <= set(chosen.tolist())  # every far-off point is a centre
    assert torch.equal(chosen, greedy_coreset(points, 50, seed=1, projection=32))
    assert torch.equal(greedy_coreset(points, 10_000), torch.arange(len(points)))


def test_a_batch_of_coresets_is_each_row_s_own_coreset():
    g = torch.Generator().manual_seed(0)
    points = torch.randn(3, 300, 40, generator=g)
    batched = greedy_coreset(points, 20, seed=2)
    assert batched.shape == (3, 20)
    for row in range(3):  # each row's choice is its own points' alone, whatever else is in the batch
        assert batched[row].unique().numel() == 20
        assert torch.equal(batched[row], greedy_coreset(points[row], 20, seed=2))
    points[1, 7] += 50  # an outlier in row 1 only
    assert 7 in greedy_coreset(points, 20, seed=2)[1].tolist()


def _patch_batches(features: torch.Tensor, batch: int = 4):
    """(N, D, h, w) features, ``batch`` images at a time."""
    for i in range(0, len(features), batch):
        yield features[i : i + batch]


def test_the_knn_memory_is_chosen_among_all_patches_when_they_fit_the_candidates():
    g = torch.Generator().manual_seed(0)
    features = torch.randn(12, 64, 4, 4, generator=g)  # 12 images x 16 patches = 192 points, layer1's 64 channels
    scorer = PatchKNN(layers=("layer1",), memory=40, candidates=192, seed=3)
    scorer.fit_stacked(_patch_batches(features), images=12)
    points = features.flatten(2).transpose(1, 2).reshape(-1, 64)
    assert torch.equal(scorer.bank, points[greedy_coreset(points, 40, seed=3)])


def test_each_image_keeps_its_share_of_the_candidates_and_its_rare_patches():
    g = torch.Generator().manual_seed(0)
    features = torch.randn(40, 64, 6, 6, generator=g) * 0.1  # 40 images x 36 patches
    features[13, :, 2, 3] += 25.0  # one rare patch in one image
    drawn = []
    scorer = PatchKNN(layers=("layer1",), memory=20, candidates=200, seed=0)

    def counted():
        for part in _patch_batches(features):
            drawn.append(len(part))
            yield part

    scorer.fit_stacked(counted(), images=40)
    assert sum(drawn) == 40 and len(scorer.bank) == 20
    assert (scorer.bank - features[13, :, 2, 3]).norm(dim=1).min() < 1e-6  # the rare patch is in the memory


def test_a_fold_s_held_out_memory_holds_no_patch_of_its_images():
    g = torch.Generator().manual_seed(0)
    features = torch.randn(15, 64, 3, 3, generator=g)  # every patch distinct: its nearest copy is itself
    fold_of = torch.arange(15) % 3
    scorer = PatchKNN(layers=("layer1",), memory=135, candidates=135, seed=0)
    scorer.fit_folds(_patch_batches(features), fold_of)
    assert len(scorer.bank) == 135  # every patch kept: 45 per fold
    # In-sample each patch finds itself (cdist's matrix-product form is exact to about 1e-3).
    assert scorer.grid_scores(features).abs().max() < 1e-2
    for fold in range(3):
        held = scorer.held_out(fold)
        assert len(held.bank) == 90
        own = held.grid_scores(features[fold_of == fold])
        assert own.min() > 0.1  # none of its own patches is left
    with pytest.raises(ValueError, match="fit_folds"):
        PatchKNN(layers=("layer1",)).held_out(0)
