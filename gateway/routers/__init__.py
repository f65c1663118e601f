"""HTTP routers: `tts` (synthesis), `voices`, `ops` (health, readiness, metrics, web page)."""
