"""The Anthropic Messages front door: Anthropic's wire shapes over the one engine.

    POST /v1/messages               streamed (SSE, named events) or a whole Message
    POST /v1/messages/count_tokens  {"input_tokens": N}, the routing plan's estimate

Any deployment serves it: a Claude deployment gets the request back in Anthropic's
shape (thinking blocks and their signatures unchanged), any other one the canonical
translation, so a client configured for Claude can be routed to a local model.
Errors are Anthropic's `{"type": "error", "error": {"type", "message"}}` with its
status codes, 529 overloaded_error when no deployment can serve now.
"""

from bridge.messages.door import MessagesDoor

__all__ = ["MessagesDoor"]
