"""The gateway: engines, strategies and the FastAPI app (issue 5)."""
