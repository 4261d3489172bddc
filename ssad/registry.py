"""Names of the detector's interchangeable parts, one table each (timm-style: a name picks a part).

Settings name parts (``score.patch_scorer = "knn"``, ``score.image_score = "fusion"``). The names
live here, below every module that uses them, so that `ssad.config` checks settings without
importing the parts (and torchvision with them). The module that implements a table's parts
registers a class for each name (`Registry.register`, in `ssad.score`); `Registry.create` builds
a part by its name, `Registry.by_class_name` finds the class a saved detector names.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any, Generic, TypeVar

__all__ = ["Registry", "STATISTICS", "IMAGE_SCORES", "MAP_SOURCES", "DENSITIES", "PATCH_SCORERS"]

T = TypeVar("T")


class Registry(Generic[T]):
    """The fixed ``names`` of one ``kind`` of part and, once registered, the class each builds.

    Iterating it, and ``in``, go over the names.
    """

    def __init__(self, kind: str, names: tuple[str, ...]) -> None:
        self.kind, self.names = kind, names
        self._classes: dict[str, tuple[type[T], dict[str, Any]]] = {}

    def __iter__(self) -> Iterator[str]:
        return iter(self.names)

    def __contains__(self, name: object) -> bool:
        return name in self.names

    def register(self, name: str, **fixed: Any) -> Callable[[type[T]], type[T]]:
        """Class decorator: ``name`` builds the class with the ``fixed`` keyword arguments (one
        class may serve several names)."""
        if name not in self.names:
            raise ValueError(f"{self.kind} {name!r}: not in the table {self.names}.")

        def add(cls: type[T]) -> type[T]:
            self._classes[name] = (cls, fixed)
            return cls

        return add

    def create(self, name: str, **options: Any) -> T:
        """The part called ``name``, built with ``options`` (and the name's fixed arguments)."""
        if name not in self._classes:
            raise ValueError(f"unknown {self.kind} {name!r}: choose one of {self.names}.")
        cls, fixed = self._classes[name]
        return cls(**fixed, **options)

    def by_class_name(self, class_name: str) -> type[T]:
        """The registered class called ``class_name`` (saved detectors name their parts' classes)."""
        classes = {cls.__name__: cls for cls, _ in self._classes.values()}
        if class_name not in classes:
            raise ValueError(f"unknown {self.kind} class {class_name!r}: one of {sorted(classes)}.")
        return classes[class_name]


#: The statistics an image score is made of, in the order of a statistics tensor's columns.
STATISTICS = ("map_max", "map_top", "density")
#: Every image score a detector can use (`ssad.image_score`): one statistic, or the calibrated
#: fusion of all three.
IMAGE_SCORES = (*STATISTICS, "fusion")
#: Where a detector's anomaly map comes from (`ssad.anomaly_map`): the patch memory, the
#: segmentation head, or their calibrated fusion; simplest first (ties in validation go to it).
MAP_SOURCES = ("memory", "head", "fusion")
#: Image densities on pooled features (`ssad.score`).
DENSITIES: Registry[Any] = Registry("density", ("gaussian", "knn"))
#: Anomaly-map scorers (`ssad.score`); a config's "auto" picks one per category (`ssad.config.ScoreConfig`).
PATCH_SCORERS: Registry[Any] = Registry("patch scorer", ("per_location", "shared", "knn"))
