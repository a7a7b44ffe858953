"""ccstream: the dedup pipeline, the command line and the local Kafka broker."""
