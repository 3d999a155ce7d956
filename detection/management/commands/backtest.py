"""Replay a file through the scoring core offline and report its quality."""

import json
from pathlib import Path

from django.core.management.base import BaseCommand, CommandError
from tqdm import tqdm

from detection.backtest import (
    backtest_read,
    backtest_run,
    draft_config,
    verdict_line,
)
from detection.management.arguments import input_file_check, number, outputs_check
from detection.scoring import scoring_config_from_db
from detection.serializers import LABEL_MATURITY_MAX_DAYS
from transactions.messages import parse_timestamp


class Command(BaseCommand):
    help = (
        "Replay INPUT (JSON Lines or CSV in the message schema) in event order with "
        "isolated in-memory state: train the model on transactions before "
        "--train-until, score the rest with the live rules and thresholds, write one "
        "verdict per line to --output and print counts, rule hits and, with labels, "
        "precision, recall, average precision and ROC AUC. Live tables are untouched."
    )

    def add_arguments(self, parser):
        parser.add_argument("input", help="JSON Lines (.jsonl) or CSV (.csv) file.")
        parser.add_argument(
            "--train-until",
            required=True,
            help="ISO 8601 time: train before it, score from it on.",
        )
        parser.add_argument("--output", required=True, help="Verdicts, JSON Lines.")
        parser.add_argument(
            "--label-maturity-days",
            type=number(float, low=0, high=LABEL_MATURITY_MAX_DAYS, unit="days"),
            default=0.0,
            help=(
                "As a retrain with MODEL_LABEL_MATURITY_SECONDS: the classifier "
                "learns only from training rows this old at --train-until, rows "
                "without is_fraud as legitimate; and a scored row without "
                "is_fraud counts as legitimate in the figures once this old, "
                "pending before (default 0: the file's labels known at once, as "
                "in make run; production's default is 30)."
            ),
        )
        parser.add_argument(
            "--compare",
            metavar="DRAFT.json",
            help=(
                "Also score a draft rule set, the live rules and thresholds with "
                'changes ({"rules": {"amount_spike": {"weight": 0.3}, '
                '"large_amount": {"params": {"threshold": 3000}}}, "thresholds": '
                '{"suspicious": 0.45}}), with the same model from the same card '
                "states, and print both side by side; its verdicts go to OUTPUT "
                "with .draft.jsonl for its suffix. Nothing live changes. As in "
                "every backtest, merchant_fraud and the lists are left out of "
                "both (today's knowledge of the past)."
            ),
        )

    def handle(self, *args, **options):
        path = Path(options["input"])
        input_file_check(path)
        output = Path(options["output"])
        inputs = {"input": path}
        if options["compare"]:
            inputs["--compare"] = Path(options["compare"])
        # Every file a run may write, checked before any is.
        outputs_check(
            {
                "--output": output,
                "The rejected lines' file": output.with_suffix(".rejected.jsonl"),
                "The draft verdicts' file": output.with_name(
                    output.stem + ".draft.jsonl"
                ),
            },
            inputs,
        )
        try:
            train_until = parse_timestamp(options["train_until"])
        except (ValueError, OverflowError) as exc:
            raise CommandError(f"--train-until is not an ISO 8601 time: {exc}") from exc
        try:
            output.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise CommandError(f"Cannot write to {output.parent}: {exc}") from exc
        config = scoring_config_from_db(model=None)
        draft = None
        if options["compare"]:
            draft_path = Path(options["compare"])
            try:
                draft = draft_config(
                    json.loads(draft_path.read_text(encoding="utf-8")), live=config
                )
            except (OSError, ValueError, RecursionError) as exc:
                # DraftError, unreadable file, JSON syntax or nesting: all name
                # the problem.
                raise CommandError(f"--compare {draft_path}: {exc}") from exc
        messages, rejected = backtest_read(path, currencies=config.currencies)
        if rejected:
            rejected_path = output.with_suffix(".rejected.jsonl")
            with rejected_path.open("w", encoding="utf-8") as handle:
                for item in rejected:
                    handle.write(json.dumps(item.__dict__) + "\n")
            self.stderr.write(
                f"{len(rejected):,} input lines rejected; see {rejected_path}"
            )
        to_score = sum(1 for m in messages if m.timestamp >= train_until)
        if not messages:
            raise CommandError("The input holds no valid transactions.")
        if not to_score:
            latest = max(m.timestamp for m in messages)
            raise CommandError(
                f"Nothing to score: every transaction is before --train-until "
                f"{train_until:%Y-%m-%d %H:%M:%S} (the latest is "
                f"{latest:%Y-%m-%d %H:%M:%S}); choose an earlier --train-until."
            )
        runs = 1 if draft is None else 2
        with tqdm(
            total=to_score * runs, desc="backtest", unit="txn", disable=None
        ) as bar:
            try:
                result = backtest_run(
                    messages,
                    train_until=train_until,
                    config=config,
                    progress=bar.update,
                    draft=draft,
                    label_maturity_seconds=options["label_maturity_days"] * 86400,
                )
            except ValueError as exc:
                raise CommandError(str(exc)) from exc
        with output.open("w", encoding="utf-8") as handle:
            for verdict in result.verdicts:
                handle.write(verdict_line(verdict) + "\n")
        metrics = result.metrics
        trained = (
            f"Trained {result.model_version} on {result.trained_on:,} transactions"
            if result.model_version
            else f"No model ({result.trained_on:,} transactions before "
            "--train-until): scored by rules alone"
        )
        self.stdout.write(f"{trained}; scored {metrics['scored']:,}; wrote {output}")
        if result.classifier:
            self.stdout.write(f"Classifier: {result.classifier}")
        self.stdout.write("By status: " + json.dumps(metrics["by_status"]))
        self.stdout.write("Rule hits: " + json.dumps(metrics["rule_hits"]))
        if "labelled" in metrics:
            self.stdout.write(
                f"Outcomes: {metrics['labelled']:,} labelled, "
                f"{metrics['presumed_legit']:,} unlabelled and old enough to count "
                f"as legitimate, {metrics['pending']:,} pending; "
                f"{metrics['fraud']:,} fraud; "
                f"precision of flagged: {metrics['precision']}; "
                f"recall: {metrics['recall']}; "
                f"average precision: {metrics.get('average_precision')}; "
                f"ROC AUC: {metrics.get('roc_auc')}"
            )
        if result.draft_verdicts is not None:
            draft_output = output.with_name(output.stem + ".draft.jsonl")
            with draft_output.open("w", encoding="utf-8") as handle:
                for verdict in result.draft_verdicts:
                    handle.write(verdict_line(verdict) + "\n")
            self.comparison_print(metrics, result.draft_metrics, draft_output)

    def comparison_print(self, live: dict, draft: dict, path: Path) -> None:
        """Print the live and the draft rule set's figures side by side."""
        self.stdout.write(
            f"\nDraft against the live rules (same model, same data; draft "
            f"verdicts in {path}):"
        )
        self.stdout.write(f"  {'':24}{'live':>16}{'draft':>16}")

        def line(name: str, a, b) -> None:
            self.stdout.write(f"  {name:24}{a:>16}{b:>16}")

        def flagged(metrics: dict) -> str:
            count = sum(n for s, n in metrics["by_status"].items() if s != "legit")
            return f"{count:,} ({count / max(metrics['scored'], 1):.2%})"

        line("flagged", flagged(live), flagged(draft))
        for status in ("suspicious", "fraud"):
            line(
                status,
                f"{live['by_status'].get(status, 0):,}",
                f"{draft['by_status'].get(status, 0):,}",
            )
        for key in ("precision", "recall", "average_precision", "roc_auc"):
            if key in live:
                line(key.replace("_", " "), str(live.get(key)), str(draft.get(key)))
        codes = dict.fromkeys([*live["rule_hits"], *draft["rule_hits"]])
        for code in codes:
            line(
                f"hits {code}",
                f"{live['rule_hits'].get(code, 0):,}",
                f"{draft['rule_hits'].get(code, 0):,}",
            )
