"""Client Portal Web API gateway simulator (HTTPS, the real endpoint shapes, switchable faults)."""
