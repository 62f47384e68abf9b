"""The cloud's carbon use cases: a mill's month read from the store, turned into ``spinline.carbon`` figures.

``spinline.carbon`` stays pure figures (factors, footprints, inventories, reports); what reads the
cloud's storage lives here, on the cloud side of the layering (see ``[tool.importlinter]``).
"""
