"""The OpenAI-compatible HTTP front door of llm-sidecar.

`app` (the ASGI app) over a `backend`: the engine in this process, or a sidecar
reached over gRPC (`remote`); `server` runs it on the sidecar's own event loop.
"""
