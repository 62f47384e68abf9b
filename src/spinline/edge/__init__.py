"""The edge agent: connectors -> coordinators -> durable buffer -> uplink, in one asyncio loop."""
