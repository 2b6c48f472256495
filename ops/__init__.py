"""The operator's tools: the `bridge` command, the supervisord event listener, the demo profile
and the embedded PostgreSQL/Redis it runs on."""
