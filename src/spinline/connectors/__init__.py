"""Device connectors: one folder per protocol, all behind ``spinline.connectors.base``."""
