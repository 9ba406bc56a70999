"""The verdict's thresholds, each with the measurement that set it (rules in ``bot.reef.verdict``'s docstring)."""

from __future__ import annotations

# Rule 1: suspect blocks within this relative depth of a source block are compared with it.
ALIGN_WINDOW = 0.1
# Rule 2: the fewest unrelated entries a null needs for a p-value (Student's t with n - 1 degrees of freedom).
MIN_NULL = 3
# Rule 4: a match needs a Holm-adjusted p under DEFAULT_ALPHA; at UNRELATED_P or more the source is cleared.
DEFAULT_ALPHA = 0.01
UNRELATED_P = 0.1
# A null none of whose models is within this factor of the source's size gets a warning in the report.
NULL_SIZE_RATIO = 10.0
# Rule 5: two GPT-2 seeds on the same data score 0.56 on the units, briefly trained same-data models 0.74
# (bench/calibration.py); every derivative of the lineage zoo 0.97 or more.
WEIGHT_FLOOR = 0.8
GEOMETRY_FLOOR = 0.9
# The score a weight statistic must reach to convict (rule 5). Geometry needs more: a student distilled through
# tied embeddings learns its teacher's token geometry without its weights (lineage zoo: 0.85, against 0.93 or
# more for every derivative).
FLOORS = {"units": WEIGHT_FLOOR, "geometry": GEOMETRY_FLOOR}
# Rule 7: a suspect holding the source's units (units score at least MERGE_FLOOR; a 50/50 merge with a model
# outside the registry scores 0.62 on the demo models, independent models 0.24-0.33) at a share of at most
# MAX_MERGE_SHARE (a fine-tune holds about 1.0) is a merge with a parent the registry does not hold.
MERGE_FLOOR = 0.5
MAX_MERGE_SHARE = 0.8
# A merge's other parent explains the rest of the suspect's rows; a derivative leaves only what training changed.
# Lineage zoo: 70/30 merges with an outside model 0.82-0.84 explained by the source, fine-tunes and merges of
# fine-tunes 0.885-0.967. This keeps a copy whose residual stream was rescaled (its share drops, nothing is added)
# from reading as a merge.
MAX_MERGE_EXPLAINED = 0.87
