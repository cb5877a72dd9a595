"""The aggregator: waits for a run's records, computes the statistics, writes the result."""
