"""Flag words mean the same at every front door: `no_fallback: on` over gRPC and HTTP."""

from __future__ import annotations

import grpc
import pytest

from sidecar.rpc.api import router_pb2_grpc as pb_grpc
from sidecar.simulate import Fault, OllamaSimulator
from sidecar.types import parse_flag
from tests.bridge_harness import http_session, running_bridge
from tests.harness import chat_request, make_config


@pytest.mark.parametrize("word", ["true", "TRUE", " yes ", "1", "on", "On"])
def test_true_words(word: str) -> None:
    assert parse_flag(word) is True


@pytest.mark.parametrize("word", ["false", "0", "no", "off", "", " OFF "])
def test_false_words(word: str) -> None:
    assert parse_flag(word) is False


@pytest.mark.parametrize("word", ["maybe", "2", "enabled", "y"])
def test_other_words_are_no_flag(word: str) -> None:
    assert parse_flag(word) is None


@pytest.mark.parametrize("word", ["on", "yes", "true"])
async def test_no_fallback_word_is_honoured_by_both_doors(word: str) -> None:
    async with OllamaSimulator() as a, OllamaSimulator() as b:
        a.fault = Fault("http_500")
        config = make_config(
            [
                ("fast-local", "ollama/llama3.2:8b", {"api_base": a.base_url}),
                ("strong-local", "ollama/llama3.3:70b", {"api_base": b.base_url}),
            ],
            litellm_settings={"fallbacks": [{"fast-local": ["strong-local"]}]},
            general_settings={"master_key": "sk-master-test"},
        )
        async with running_bridge(config, "in-process") as bridge:
            async with grpc.aio.insecure_channel(
                f"127.0.0.1:{bridge.sidecar.grpc_port}"
            ) as channel:
                stub = pb_grpc.RouterStub(channel)
                with pytest.raises(grpc.aio.AioRpcError) as err:
                    await stub.Chat(
                        chat_request("fast-local", metadata={"no_fallback": word}),
                        timeout=5,
                        metadata=(("authorization", "Bearer sk-master-test"),),
                    )
                assert err.value.code() == grpc.StatusCode.UNAVAILABLE
            body = {
                "model": "fast-local",
                "messages": [{"role": "user", "content": "Say hello"}],
                "metadata": {"no_fallback": word},
            }
            url = f"{bridge.base_url}/chat/completions"
            async with http_session() as http, http.post(url, json=body) as reply:
                assert reply.status == 503
            # Neither door fell back to strong-local.
            assert a.stats.requests == 2
            assert b.stats.requests == 0
