"""Tests through real processes: servers killed and restarted, two servers on one
database, the `webapp` command. Most are marked slow and run once, on PostgreSQL."""
