#!/usr/bin/env python
"""Django's command-line utility for administrative tasks."""

import os
import sys

# Commands that take SIGUSR1 as "consume what is left, then stop" (make run's
# shutdown): remembered from the start, not fatal while Django loads.
DRAINING_COMMANDS = {"consume_transactions", "consume_chargebacks"}


def main() -> None:
    """Run administrative tasks."""
    if len(sys.argv) > 1 and sys.argv[1] in DRAINING_COMMANDS:
        from fraudsite.processes import drain_signal_remember

        drain_signal_remember()
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "fraudsite.settings")
    from django.core.exceptions import ImproperlyConfigured
    from django.core.management import execute_from_command_line

    try:
        execute_from_command_line(sys.argv)
    except ImproperlyConfigured as error:
        if "--traceback" in sys.argv:
            raise
        # A setting missing or wrong (the settings say which and how to fix
        # it): its message, not forty lines of import traceback above it.
        sys.exit(f"Configuration error: {error}")


if __name__ == "__main__":
    main()
