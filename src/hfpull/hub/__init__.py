"""The wire to any HF-compatible server: sessions, sources and retries, the API client."""
