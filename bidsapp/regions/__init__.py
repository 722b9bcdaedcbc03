"""Region reduction: where voxel signals become region signals.

Modules: :mod:`.reducer` (:class:`RegionReducer` and the reductions), :mod:`.labels`
(labels images: checks, masking, building a reducer, signals to and from images),
:mod:`.maps` (probabilistic maps: the least-squares :class:`MapsReducer`, signals to and
from images), :mod:`.coverage` (how much of each region a mask keeps). Part of the
numerical core.
"""

from bidsapp.regions.coverage import region_coverage, region_voxel_counts
from bidsapp.regions.labels import (
    check_labels_values,
    img_to_signals,
    labels_reducer,
    masked_labels,
    signals_to_img,
)
from bidsapp.regions.maps import (
    MapsReducer,
    img_to_signals_maps,
    maps_reducer,
    signals_to_img_maps,
    warn_masked_maps,
)
from bidsapp.regions.reducer import REDUCTIONS, RegionReducer, check_reduction

__all__ = [
    "REDUCTIONS",
    "MapsReducer",
    "RegionReducer",
    "check_labels_values",
    "check_reduction",
    "img_to_signals",
    "img_to_signals_maps",
    "labels_reducer",
    "maps_reducer",
    "masked_labels",
    "region_coverage",
    "region_voxel_counts",
    "signals_to_img",
    "signals_to_img_maps",
    "warn_masked_maps",
]
