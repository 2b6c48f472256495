"""The bridge's own shared package: config, row models, stream names and codec, JSONL, clock, logs."""
