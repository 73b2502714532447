"""The OpenAI Responses front door, stateless: the Responses API's shapes over the one engine.

    POST /v1/responses         streamed (SSE, numbered events) or a whole Response
    GET  /v1/responses/{id}    404: nothing is stored, so there is nothing to fetch

Any deployment serves it; a request that depends on stored state
(`previous_response_id`, `conversation`, item references) is refused with a 400.
Errors are OpenAI's, as at the chat door.
"""

from bridge.responses.door import ResponsesDoor

__all__ = ["ResponsesDoor"]
