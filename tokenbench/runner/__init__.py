"""`tokenbench run`: producer, workers and aggregator on one machine, with what they need started."""
