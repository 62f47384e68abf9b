"""MQTT device data: JSON payloads mapped by the site file, and Sparkplug B."""
