"""What the producer, workers and aggregator agree on: records, configuration, Redis keys."""
