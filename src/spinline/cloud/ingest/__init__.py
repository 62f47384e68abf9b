"""Ingest of edge batches (MQTT shared subscriptions and HTTPS POST) into the time-series store."""
