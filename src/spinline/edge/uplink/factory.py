"""``make_uplink``: the one place that knows every uplink, chosen by the cloud URL's scheme.

Kept out of ``base`` so the transports import ``base`` and nothing imports them back (no
``base`` <-> ``http``/``mqtt`` import circle); each transport is imported only when chosen.
"""

from __future__ import annotations

from urllib.parse import urlsplit

from .base import AckTrust, Uplink


def make_uplink(url: str, *, edge: str, mill: str, secret: bytes, timeout_s: float = 10.0,
                trust: AckTrust | None = None) -> Uplink:
    """An uplink for ``mqtt://[user:pass@]host:port`` or ``http(s)://host:port[/prefix]``."""
    scheme = urlsplit(url).scheme
    if scheme in ("mqtt", "mqtts", "tcp"):
        from .mqtt import MqttUplink

        return MqttUplink(url, edge=edge, mill=mill, secret=secret, timeout_s=timeout_s, trust=trust)
    if scheme in ("http", "https"):
        from .http import HttpUplink

        return HttpUplink(url, edge=edge, mill=mill, secret=secret, timeout_s=timeout_s, trust=trust)
    raise ValueError(f"unsupported cloud URL {url!r} (use mqtt://host:port or https://host)")
