"""Detection workflows that write: score-and-record, redrive, what-if, label, retrain.

- `recording`: verdicts and user state in one database transaction;
- `dead_letters`: redrive letters whose cause is fixed;
- `what_if`: score a hypothetical payment against stored history;
- `labels`: an analyst's or a chargeback's label, and what the profile learns;
- `training`: replay history, fit the forest and the classifier, gate activation;
- `rules`: the default rule set.
"""

from detection.services.dead_letters import RedriveReport, dead_letters_redrive
from detection.services.labels import transaction_label
from detection.services.recording import (
    PAYMENT_IDENTITY,
    RecordedBatch,
    ScoredBatch,
    scored_batch_current,
    transaction_batch_score,
    transaction_batch_score_record,
    transaction_id_conflicts,
    transaction_row,
)
from detection.services.rules import rules_seed_defaults
from detection.services.training import (
    TrainingSet,
    features_extend,
    features_replay,
    flag_rate_decision,
    model_retrain,
    training_features,
)
from detection.services.what_if import transaction_what_if

__all__ = [
    "PAYMENT_IDENTITY",
    "RecordedBatch",
    "RedriveReport",
    "ScoredBatch",
    "TrainingSet",
    "dead_letters_redrive",
    "features_extend",
    "features_replay",
    "flag_rate_decision",
    "model_retrain",
    "rules_seed_defaults",
    "scored_batch_current",
    "training_features",
    "transaction_batch_score",
    "transaction_batch_score_record",
    "transaction_id_conflicts",
    "transaction_label",
    "transaction_row",
    "transaction_what_if",
]
