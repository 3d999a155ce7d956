"""The scoring core: one function turns a batch of transactions into verdicts.

The stream consumer, `POST /api/predict`, `POST /api/validate-transaction`, the
backtest and model training all go through `transaction_features_batch` and
`verdicts_score`: same features, same rules, same model, same verdict.

- `config`: what scorers apply (rules, thresholds, rates, lists, model) and the
  provider that re-reads it without a restart;
- `features`: each transaction's features against its card's state;
- `verdicts`: the blend of rules, model and classifier into risk, status and
  reasons.
"""

from detection.scoring.config import (
    MERCHANT_FRAUD,
    ActiveRule,
    ScoringConfig,
    ScoringConfigProvider,
    rule_active,
    scoring_config_current,
    scoring_config_defaults,
    scoring_config_from_db,
    scoring_provider,
)
from detection.scoring.features import (
    NOTE_LATE,
    feature_matrix,
    state_learn_later,
    transaction_features_batch,
)
from detection.scoring.verdicts import (
    NOTE_RULES_ONLY,
    STATUS_FRAUD,
    STATUS_LEGIT,
    STATUS_SUSPICIOUS,
    Verdict,
    model_alone_flag_rate,
    transaction_score_batch,
    verdicts_score,
)

__all__ = [
    "MERCHANT_FRAUD",
    "NOTE_LATE",
    "NOTE_RULES_ONLY",
    "STATUS_FRAUD",
    "STATUS_LEGIT",
    "STATUS_SUSPICIOUS",
    "ActiveRule",
    "ScoringConfig",
    "ScoringConfigProvider",
    "Verdict",
    "feature_matrix",
    "model_alone_flag_rate",
    "rule_active",
    "scoring_config_current",
    "scoring_config_defaults",
    "scoring_config_from_db",
    "scoring_provider",
    "state_learn_later",
    "transaction_features_batch",
    "transaction_score_batch",
    "verdicts_score",
]
