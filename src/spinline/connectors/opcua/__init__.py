"""OPC UA: subscriptions with monitored items (polling only when the server cannot subscribe)."""
