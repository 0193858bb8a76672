"""Fault tests under load: Redis restarted, killed or hung and the audit store stopped or
hung while 50 clients stream, and clients too slow to read. The standard: every accepted
request has exactly one outcome record, no client gets a duplicated or missing token in
silence, and no job is left pending past its lease. ``load.py`` drives the clients and
checks their replies; ``servers.py`` holds the Redis and PostgreSQL servers a test owns."""
