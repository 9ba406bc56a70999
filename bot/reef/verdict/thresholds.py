"""The verdict's thresholds, each with the measurement that set it (rules in ``bot.reef.verdict``'s docstring)."""

from __future__ import annotations

ALIGN_WINDOW = 0.1
MIN_NULL = 3
DEFAULT_ALPHA = 0.01
UNRELATED_P = 0.1
NULL_SIZE_RATIO = 10.0
WEIGHT_FLOOR = 0.8
GEOMETRY_FLOOR = 0.9
# The score a weight statistic must reach to convict (rule 5). Geometry needs more: a student distilled through
# tied embeddings learns its teacher's token geometry without its weights (lineage zoo: 0.85, against 0.93 or
# more for every derivative).
FLOORS = {"units": WEIGHT_FLOOR, "geometry": GEOMETRY_FLOOR}
MERGE_FLOOR = 0.5
MAX_MERGE_SHARE = 0.8
# A merge's other parent explains the rest of the suspect's rows; a derivative leaves only what training changed.
# Lineage zoo: 70/30 merges with an outside model 0.82-0.84 explained by the source, fine-tunes and merges of
# fine-tunes 0.885-0.967. This keeps a copy whose residual stream was rescaled (its share drops, nothing is added)
# from reading as a merge.
MAX_MERGE_EXPLAINED = 0.87
