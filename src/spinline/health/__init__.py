"""Equipment health: vibration and process features, anomaly detection, diagnosis, health index,
remaining useful life, alarms and work orders.

Modules are imported on use (``from spinline.health.features import featurize``); this package
module stays empty so importing ``spinline.health`` costs nothing on the edge.
"""
