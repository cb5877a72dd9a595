"""The producer: turns prompts into one RQ job each on Redis."""
