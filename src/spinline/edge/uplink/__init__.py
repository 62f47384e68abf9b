"""Uplinks to the cloud: MQTT QoS 1 (default) and HTTPS POST, behind ``base.Uplink``."""

from __future__ import annotations

from .base import Ack, Uplink
from .factory import make_uplink

__all__ = ["Ack", "Uplink", "make_uplink"]
