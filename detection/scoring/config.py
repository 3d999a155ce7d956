"""What scorers apply: rules, thresholds, rates, lists and model, as one snapshot.

`ScoringConfigProvider` re-reads it from the database every few seconds, which is
how an admin edit or a retrain reaches running scorers without a restart.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from django.db import DatabaseError

from detection.lists import EMPTY as EMPTY_LISTS
from detection.lists import Lists
from detection.registry import (
    LoadedModel,
    model_active_row,
    model_active_version,
    model_load,
)
from detection.rules import (
    LEARNED_FRAUD,
    RULE_TYPES,
    RuleType,
    rule_params_validate,
)

logger = logging.getLogger(__name__)

MERCHANT_FRAUD = "merchant_fraud"


@dataclass(frozen=True)
class ActiveRule:
    """A rule as configured now: its type, parameters and weight."""

    rule_type: RuleType
    params: dict
    weight: float


@dataclass(frozen=True)
class ScoringConfig:
    """A consistent snapshot of rules, thresholds and model used for one batch."""

    rules: tuple[ActiveRule, ...]
    suspicious_threshold: float
    fraud_threshold: float
    model: LoadedModel | None
    # Units of each accepted currency per unit of BASE_CURRENCY (which is 1).
    rates: Mapping[str, float] = field(default_factory=lambda: base_rate())
    # (id, min_status) of the active alert webhooks (detection.alerts).
    webhooks: tuple[tuple[int, str], ...] = ()
    # The block and allow lists (detection.lists).
    lists: Lists = EMPTY_LISTS
    # merchant_id -> transactions confirmed as fraud lately (detection.merchants),
    # read only while the merchant_fraud rule is enabled.
    merchant_fraud: Mapping[str, int] = field(default_factory=dict)

    @property
    def currencies(self) -> frozenset[str]:
        """Return the currencies this config can compare (those with a rate)."""
        return frozenset(self.rates)

    @property
    def learned_fraud_enabled(self) -> bool:
        """Whether the learned_fraud rule is enabled (the classifier runs only then)."""
        return any(rule.rule_type.code == LEARNED_FRAUD for rule in self.rules)

    @property
    def model_version(self) -> str:
        """Return the active model's version, or "" when scoring by rules alone."""
        return self.model.version if self.model else ""


def base_rate() -> dict[str, float]:
    from django.conf import settings

    return {settings.BASE_CURRENCY: 1.0}


def scoring_config_defaults(*, model: LoadedModel | None = None) -> ScoringConfig:
    """Return the built-in defaults (what the seed migration stores)."""
    return ScoringConfig(
        rules=tuple(
            ActiveRule(rule_type, rule_type.params_defaults(), rule_type.weight)
            for rule_type in RULE_TYPES.values()
            if rule_type.enabled_by_default
        ),
        suspicious_threshold=0.5,
        fraud_threshold=0.8,
        model=model,
    )


def scoring_config_from_db(*, model: LoadedModel | None) -> ScoringConfig:
    """Return the rules and thresholds stored in the database, with a model."""
    from detection.alerts import alert_webhooks_active
    from detection.lists import lists_current
    from detection.models import DecisionThresholds, ExchangeRate, Rule

    rules = [
        rule
        for row in Rule.objects.filter(enabled=True)
        if (rule := rule_active(row)) is not None
    ]
    thresholds = DecisionThresholds.objects.filter(pk=1).first()
    rates = dict(ExchangeRate.objects.values_list("currency", "units_per_base"))
    return ScoringConfig(
        rules=tuple(rules),
        suspicious_threshold=thresholds.suspicious if thresholds else 0.5,
        fraud_threshold=thresholds.fraud if thresholds else 0.8,
        model=model,
        rates={**rates, **base_rate()},
        webhooks=alert_webhooks_active(),
        lists=lists_current(),
        merchant_fraud=_merchant_fraud_current(rules),
    )


def rule_active(row) -> ActiveRule | None:
    """Return a stored `Rule` row as scorers apply it, or None (logged) when no
    code implements it or its params are bad."""
    rule_type = RULE_TYPES.get(row.code)
    if rule_type is None:
        logger.warning("ignoring rule %r: no code implements it", row.code)
        return None
    try:
        params = rule_params_validate(row.code, row.params)
    except ValueError as exc:
        # Admin refuses bad params; a row edited behind its back is skipped
        # loudly rather than crashing every scorer.
        logger.error("ignoring rule %s with bad params: %s", row.code, exc)
        return None
    return ActiveRule(rule_type, params, row.weight)


def _merchant_fraud_current(rules: Sequence[ActiveRule]) -> dict[str, int]:
    from detection.merchants import merchant_fraud_counts

    rule = next((r for r in rules if r.rule_type.code == MERCHANT_FRAUD), None)
    return {} if rule is None else merchant_fraud_counts(days=rule.params["days"])


class ScoringConfigProvider:
    """Hand out the current ScoringConfig, re-reading the DB every few seconds.

    Rule, threshold, rate and webhook rows are re-read on every refresh (tiny
    tables); the model artifact is loaded again only when the active version
    changed. This is how an admin edit or a retrain reaches running scorers
    without a restart.
    """

    def __init__(self, *, refresh_seconds: float | None = None) -> None:
        from django.conf import settings

        self.refresh_seconds = (
            settings.DETECTION_CONFIG_REFRESH_SECONDS
            if refresh_seconds is None
            else refresh_seconds
        )
        self._lock = threading.Lock()
        self._config: ScoringConfig | None = None
        self._loaded_at = 0.0
        self._model: LoadedModel | None = None
        # The active version that failed to load, and why: not retried every
        # refresh (versions are immutable), and shown by the health endpoint.
        self._failed_version: str | None = None
        self.model_error: str | None = None

    def current(self) -> ScoringConfig:
        """Return the config, refreshing it when older than refresh_seconds."""
        now = time.monotonic()
        if self._config is not None and now - self._loaded_at < self.refresh_seconds:
            return self._config
        with self._lock:
            if self._config is None or now - self._loaded_at >= self.refresh_seconds:
                try:
                    self._config = scoring_config_from_db(model=self._model_current())
                except DatabaseError as exc:
                    if self._config is None:
                        raise
                    # A database blip: score on with the last config (the batch's
                    # own writes retry); read it again after the next interval.
                    logger.warning(
                        "could not refresh rules and model (%s); using those read "
                        "%.0f s ago",
                        exc,
                        time.monotonic() - self._loaded_at,
                    )
                self._loaded_at = time.monotonic()
            return self._config

    def invalidate(self) -> None:
        """Force a reload on the next call."""
        self._loaded_at = 0.0

    def _model_current(self) -> LoadedModel | None:
        # The version alone first: the full row carries the model files (MBs),
        # read only when the active version changed.
        version = model_active_version()
        if version is None:
            self._model, self._failed_version, self.model_error = None, None, None
        elif self._model is not None and self._model.version == version:
            # In use (again, if a version that failed was activated meanwhile).
            self._failed_version, self.model_error = None, None
        elif version != self._failed_version and (row := model_active_row()):
            # A version that failed was logged then; it is not tried again.
            try:
                self._model = model_load(row)
                self._failed_version, self.model_error = None, None
                logger.info("scoring with model %s", row.version)
            except Exception as exc:
                self._failed_version = row.version
                kept = self._model.version if self._model else "none: rules only"
                self.model_error = f"cannot load model {row.version}: {exc}"
                logger.exception(
                    "cannot load model %s; scoring with the previous one (%s)",
                    row.version,
                    kept,
                )
        return self._model


_provider: ScoringConfigProvider | None = None


def scoring_provider() -> ScoringConfigProvider:
    """Return this process's scoring config provider."""
    global _provider
    if _provider is None:
        _provider = ScoringConfigProvider()
    return _provider


def scoring_config_current() -> ScoringConfig:
    """Return this process's current scoring config (refreshed every few seconds)."""
    return scoring_provider().current()
