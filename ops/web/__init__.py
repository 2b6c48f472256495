"""The web console (`bridge web`): a read-only aiohttp server for the risk manager (the net
Greeks, the book by underlying, the record's completeness, the health) and for monitoring
(/metrics in the Prometheus format, /healthz). See docs/WEB.md."""
