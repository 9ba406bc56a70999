"""From CKA grids to a calibrated verdict: derived, merged, unrelated or inconclusive.

A bare CKA threshold does not work: an independently trained model of the same architecture on the same data
scores 0.76-0.94 (REEF appendix F, and the same on our tiny models), so what counts as "high" depends on the
source. The rule:

0. **Conditioning** (on by default; ``conditioned=False`` gives REEF's plain CKA). The part of each Gram that
   the probes' surface alone predicts (last characters, length; ``bot.reef.probes.surface_basis``) is
   projected out before the measure. Every model's last-token state encodes its last token, which makes
   unrelated models with similar tokenizers look alike; measured on the demo registry, independent tiny
   models drop from 0.81-0.87 to 0.44-0.47 while a fine-tune of the source stays at 0.86 (plain: 0.95).
1. **Layer alignment.** Each stored block sits at relative depth ``(i + 1) / n_layers``. For every source
   block, take the best CKA over suspect blocks within ``ALIGN_WINDOW`` (0.1) of its depth, or the nearest
   block when none is that close; the score is the mean over source blocks. This pairs blocks of models with
   different depths (pruned, grown) by position, and tolerates a dropped block.
2. **Null per source.** The same score between the source and every other registry entry that is not
   declared related to it (``related`` in either direction, or a shared declared relative), reference entries
   included. At least ``MIN_NULL`` (3) such scores are needed.
3. **p-value.** Scores are mapped by Fisher's ``atanh``; with null mean μ, standard deviation s over n
   values, ``T = (atanh(score) − μ) / (s·√(1 + 1/n))`` follows Student's t with n − 1 degrees of freedom
   when the suspect is one more unrelated model, so ``p = P(t ≥ T)`` is a prediction-interval p-value.
   ``z = (atanh(score) − μ) / s`` is reported beside it. p-values are Holm-adjusted over the sources checked.
4. **Decision.** A source with adjusted p < ``alpha`` (0.01) whose score also exceeds the null ceiling (the
   highest score between any source checked and an entry unrelated to it) is a match. A significant score at
   or under the ceiling is inconclusive: the null of that source does not cover models like the suspect (a
   registry whose only references are tiny models puts two real pretrained LMs far out in the tail of each
   other's null; measured: MiniLM against Gemma 3 270M scores 0.38, its toy-only null 0.22-0.31, while toy
   pairs reach 0.49). Adjusted p ≥ ``UNRELATED_P`` (0.1) is unrelated; between is inconclusive, and so is a
   source whose null is too small. Matches are grouped into
   families by declared relations: one family → derived (from its best-scoring source), two or more →
   merged (naming the best source of each family). No match → unrelated, or inconclusive if any source was.
5. **Weights** (``bot.reef.weights``). When the source and the suspect both carry anchor rows, share at
   least ``MIN_SHARED`` anchor tokens, and the source has ``MIN_NULL`` unrelated entries to compare with,
   the weights decide that source instead of CKA. Two statistics are computed on the rows' fine parts:
   *units* (hidden units paired one to one; survives permutations and per-unit scales) and *geometry*
   (linear CKA of the rows; survives any rotation of the residual stream). Each gets the same prediction
   p-value against the source's null (rule 3) and its own ceiling (rule 4, over that statistic's null
   scores). The statistic that decides is the one with the smaller p-value among those over their floor
   (``FLOORS``: 0.8 for units, 0.9 for geometry) and ceiling, else the one with the smaller p-value; its
   p-value is doubled (Bonferroni, which stays valid since the chosen p is never below the smaller one), and
   a match needs its score over floor and ceiling. Representations cannot tell a fine-tune from an independent model
   of the same architecture and data; the weights separate them by tens of standard deviations (lineage
   zoo: every derivative 0.97 or more, every independent model 0.53 or less). The floor is there because
   a registry rarely holds the hardest null: two GPT-2 seeds on the same data and tokenizer score 0.56 on
   the demo models, four standard deviations above the cross-architecture pairs (0.44-0.52), and briefly
   trained same-data models reach 0.74 (bench/calibration.py), so without such a twin in the null their
   p-value alone could accuse. A merge's components are judged on what the other components leave
   (rule 6), where they score near 1.0 although each correlates only 0.72 with the merge. Where the
   weights fall short but CKA is significant, the source is inconclusive, not a match: the suspect
   computes like the source without its weights (a distilled student, or convergent training), which is
   not evidence of copying. Without weight evidence (other tokenizer families, old entries) rules 1-4
   decide alone. The Holm adjustment runs over each source's deciding p-value (``p_fused``), and every
   match says which evidence carried it.
6. **Merge components.** A merge correlates only partly with each component (an equal two-way average:
   about 0.72; a 0.4 share: 0.55). Each source is also aligned with the suspect's rows less the fitted
   share (non-negative least squares) of the other *candidates*, the sources whose weight p-value is under
   alpha, and that evidence replaces the direct one where stronger (``WeightEvidence.net_of`` names what was
   taken out); a source that becomes significant joins the candidates, until nothing changes. A merge's
   components then score near 1.0; an independent model gains nothing. ``Report.merge_coefficients``
   gives each named source's share.
7. **Merges with an unregistered parent.** A merge scales each parent's rows by its coefficient, so a
   suspect that holds a source's own units (units score at least ``MERGE_FLOOR``, 0.5, above that
   statistic's ceiling, adjusted p < alpha) at a share of at most ``MAX_MERGE_SHARE`` (0.8; a fine-tune
   holds about 1.0), the source explaining at most ``MAX_MERGE_EXPLAINED`` (0.87) of its rows, is merged: the
   verdict names the source, its share (``bot.reef.weights.WeightScores.share``)
   and an unregistered parent holding the rest (``Report.unregistered_share``). On the demo models a 50/50
   merge with a model outside the registry scores 0.62 on the units, independent models 0.24-0.33.

The code follows the stages of a check (``pipeline``): ``calibration`` (rule 2, each source's null; stored by a
registry that keeps it), observation (rules 1, 3, 5), ``weighing`` (rules 5-7), ``rules`` (the two decision
tables) and ``reasons`` (every sentence); ``nulls`` is the statistics engine, ``results`` the returned values,
``thresholds`` the calibrated constants.
"""

from bot.reef.verdict.calibration import Calibrated, Calibration, SourceNull, calibrate, entries_digest
from bot.reef.verdict.judge import WeightJudge
from bot.reef.verdict.nulls import aligned_score, approximate_parameters, pair_grid, relative_depths
from bot.reef.verdict.pipeline import compare
from bot.reef.verdict.results import (
    REPORT_SCHEMA_VERSION,
    Evidence,
    Report,
    SourceMatch,
    Verdict,
    WeightEvidence,
    WeightJudgement,
)
from bot.reef.verdict.thresholds import DEFAULT_ALPHA, MIN_NULL, UNRELATED_P, WEIGHT_FLOOR

__all__ = [
    "DEFAULT_ALPHA",
    "MIN_NULL",
    "REPORT_SCHEMA_VERSION",
    "UNRELATED_P",
    "WEIGHT_FLOOR",
    "Calibrated",
    "Calibration",
    "Evidence",
    "Report",
    "SourceMatch",
    "SourceNull",
    "Verdict",
    "WeightEvidence",
    "WeightJudge",
    "WeightJudgement",
    "aligned_score",
    "approximate_parameters",
    "calibrate",
    "compare",
    "entries_digest",
    "pair_grid",
    "relative_depths",
]
