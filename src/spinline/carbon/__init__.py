"""Carbon footprint and energy analytics: emission factors, Scope 1/2 inventory, product footprint,
data quality of the energy meters, energy insight, GB/T 36132 indicators, reports and PACT export.

The accounting modules are pure functions over plain data; ``service`` is the one place that reads a
store, and ``report``/``cli`` the places that write files.
"""
