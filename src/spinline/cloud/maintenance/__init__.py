"""The cloud's maintenance room: one door for everything about equipment health and its follow-up.

- ``pipeline``: the periodic health pipeline over stored features (health per asset, alarms with
  hysteresis, work orders), restart-safe through ``AlarmEngine.export_state``;
- ``events``: alarm events raised at the edge (signed, idempotent) recorded as alarms and orders;
- ``store``: ``HealthStore``, alarms and work orders in the metadata database;
- ``service``: ``Maintenance``, the record-level use cases the maintenance routes (and the console) call.

The pure state machines, rules and reports stay in ``spinline.health``; the HTTP routes stay thin in
``spinline.cloud.api.routes.maintenance`` and ``routes.health``.
"""
