"""Registry distribution: credentials, the distribution API client, push and pull."""
