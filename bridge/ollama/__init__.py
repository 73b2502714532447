"""The Ollama-compatible front door: Ollama's own API on a port of its own.

app      the ASGI app: routes, auth, streaming and Ollama's error shape
parse    /api/chat, /api/generate and /api/embed bodies -> the canonical requests
render   NDJSON lines and replies as Ollama writes them; aliases as Ollama models
"""
