"""The bridge's own package: config, row models, stream names, codec, JSONL, clock, logs."""
