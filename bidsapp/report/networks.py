"""Networks of an atlas's regions, for grouping them in the report's figures.

Part of the report layer, pure data (no drawing): a network per region from the look-up
table's network column, or from Schaefer 2018 names; contiguous blocks of one network.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

import numpy as np

_NETWORK_COLUMNS = ("network", "network_label", "network_name", "Network")
# Schaefer 2018 LUT names: "7Networks_LH_Vis_1", "17Networks_RH_DefaultA_PFCm_3", or the
# same without the "7Networks_" prefix.


_SCHAEFER = re.compile(r"^(?:\d+Networks_)?(?:LH|RH)_([A-Za-z]+)(?:_|$)")


def region_networks(names: Sequence[str], lut: Any = None) -> list[str] | None:
    """Return the network of each region, when the LUT carries it.

    Parameters
    ----------
    names : sequence of str
        Region names in column order.
    lut : pandas.DataFrame, optional
        The atlas look-up table (``index``, ``name``, ...). A ``network`` (or
        ``network_label``) column is used when present; otherwise networks are read from
        Schaefer-style names (``7Networks_LH_Vis_1`` -> ``Vis``).

    Returns
    -------
    list of str or None
        One network per region, or None when the names do not carry networks (or carry
        a single one, which groups nothing).
    """
    networks: list[str | None] = [None] * len(names)
    if lut is not None and "name" in getattr(lut, "columns", ()):
        for column in _NETWORK_COLUMNS:
            if column in lut.columns:
                by_name = dict(zip(lut["name"].astype(str), lut[column], strict=False))
                networks = [_text_or_none(by_name.get(str(n))) for n in names]
                break
    if not all(networks):
        matches = [_SCHAEFER.match(str(n)) for n in names]
        networks = [m.group(1) if m else None for m in matches]
    if not names or not all(networks) or len(set(networks)) < 2:
        return None
    return [str(n) for n in networks]


def _text_or_none(value: Any) -> str | None:
    if value is None or (isinstance(value, float) and np.isnan(value)):
        return None
    text = str(value).strip()
    return text or None


def network_blocks(networks: Sequence[str]) -> tuple[np.ndarray, list[tuple[str, int, int]]]:
    """Order regions by network and return the contiguous blocks.

    Networks keep the order of their first appearance; within a network the regions keep
    their original order (for Schaefer: left hemisphere, then right).

    Parameters
    ----------
    networks : sequence of str
        Network of each region.

    Returns
    -------
    order : numpy.ndarray of int
        Region positions in display order.
    blocks : list of (str, int, int)
        Network name, first and one-past-last position in the display order.
    """
    first_seen: dict[str, int] = {}
    for net in networks:
        first_seen.setdefault(net, len(first_seen))
    order = np.array(
        sorted(range(len(networks)), key=lambda i: (first_seen[networks[i]], i)), dtype=int
    )
    blocks: list[tuple[str, int, int]] = []
    for pos, idx in enumerate(order):
        net = networks[idx]
        if blocks and blocks[-1][0] == net:
            blocks[-1] = (net, blocks[-1][1], pos + 1)
        else:
            blocks.append((net, pos, pos + 1))
    return order, blocks
