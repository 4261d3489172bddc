"""The tables of part names (`ssad.registry`): `ssad.score` registers a class for every name."""

from __future__ import annotations

import pytest

from ssad.registry import DENSITIES, PATCH_SCORERS, Registry
from ssad.score import GaussianDensity, KNNDensity, PatchGaussian, PatchKNN


def test_every_name_builds_its_part_and_saved_class_names_find_them():
    assert isinstance(DENSITIES.create("gaussian"), GaussianDensity)
    assert DENSITIES.create("knn", k=5).k == 5
    assert [type(PATCH_SCORERS.create(name)) for name in PATCH_SCORERS] == [PatchGaussian, PatchGaussian, PatchKNN]
    assert PATCH_SCORERS.create("shared").shared and not PATCH_SCORERS.create("per_location").shared
    assert DENSITIES.by_class_name("KNNDensity") is KNNDensity
    assert DENSITIES.by_class_name("GaussianDensity") is GaussianDensity
    assert PATCH_SCORERS.by_class_name("PatchKNN") is PatchKNN


def test_names_outside_the_table_are_refused():
    table: Registry[object] = Registry("widget", ("round",))
    with pytest.raises(ValueError, match="not in the table"):
        table.register("square")
    table.register("round", size=2)(dict)
    assert table.create("round") == {"size": 2} and "round" in table and "square" not in table
    with pytest.raises(ValueError, match="unknown widget 'square'"):
        table.create("square")
    with pytest.raises(ValueError, match="unknown widget class"):
        table.by_class_name("list")
