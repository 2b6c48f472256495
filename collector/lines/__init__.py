"""Market-data lines: which requests to hold open within the line budget (pure logic)."""
