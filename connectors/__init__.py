"""ccstream: contact-center events from WebSocket sessions into Kafka (source side)."""
