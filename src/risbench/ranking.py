"""Which distances provably rank a descriptor's images alike (Table 3 shows one row each).

Known from the config, never from the numbers (docs/design.md, "Same ranking"):

- ``cosine`` and ``angular`` always: angular = arccos(1 − cosine)/π is an
  increasing function of the cosine distance (both come from the same clamped
  similarity; a zero row has similarity 0 with anything in both).
- ``euclidean`` joins them for an L2-normalised descriptor (model option
  ``normalize: l2``): for unit rows |a − b|² = 2 − 2 cos θ = 2 · cosine, so
  the Euclidean distance is √(2 · cosine), increasing too. The exceptions:
  an all-zero feature row, which normalisation leaves at zero, is at
  Euclidean distance 1 from every unit row where √(2 · cosine) says √2; and
  float32 rounding can order near-ties differently.

An increasing function keeps every ranking, so every ranked metric agrees;
the radius metrics agree up to each distance's own radius grid.

Which descriptors are L2-normalised is the config's to say
(:func:`risbench.config.l2_normalized`); this module knows no model.
"""

from __future__ import annotations

# Float distances in the order Table 3 names them; the first of a set is the row it keeps.
ORDER = ("cosine", "angular", "euclidean")
ALWAYS_SAME = frozenset({"cosine", "angular"})
SAME_ON_UNIT_ROWS = frozenset({"cosine", "angular", "euclidean"})


def same_ranking(distances, normalized: bool) -> list[tuple[str, ...]]:
    """The distances of one descriptor in sets that rank alike: each set in
    :data:`ORDER` (others alone, as given), sets in the order of their first
    distance; ``normalized``: the descriptor is L2-normalised."""
    equal = SAME_ON_UNIT_ROWS if normalized else ALWAYS_SAME
    present = list(dict.fromkeys(distances))
    rank = {name: ORDER.index(name) if name in ORDER else len(ORDER) for name in present}
    present.sort(key=rank.__getitem__)  # stable: the others keep their order
    shared = tuple(name for name in present if name in equal)
    groups, placed = [], False
    for name in present:
        if name not in shared or len(shared) == 1:
            groups.append((name,))
        elif not placed:
            groups.append(shared)
            placed = True
    return groups
