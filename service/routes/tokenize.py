"""`POST /tokenize`: token ids of a prompt or of chat messages (vLLM's request and response shape)."""

from __future__ import annotations

from fastapi import APIRouter

from service.api_schemas import TokenizeRequest, TokenizeResponse
from service.deps import EngineDep, SettingsDep
from service.engines import find_card
from service.errors import BadRequest
from service.security import ApiKey, check_messages

router = APIRouter(tags=["tokenize"], dependencies=[ApiKey])


@router.post("/tokenize")
async def tokenize(body: TokenizeRequest, engine: EngineDep, settings: SettingsDep) -> TokenizeResponse:
    if (body.prompt is None) == (body.messages is None):
        raise BadRequest("give exactly one of prompt (text) or messages (a chat)", param="prompt")
    model = body.model or settings.model_name
    card = find_card(engine.models(), model)
    if body.messages is not None:
        check_messages(settings, len(body.messages))
        messages = [
            {"role": "system" if m.role == "developer" else m.role, "content": m.text()}
            for m in body.messages
        ]
        tokens = await engine.tokenize(
            model, messages=messages, add_generation_prompt=body.add_generation_prompt
        )
    else:
        tokens = await engine.tokenize(model, text=body.prompt)
    card = find_card(engine.models(), model)  # the window may have been learnt just now (vllm)
    return TokenizeResponse(model=model, count=len(tokens), max_model_len=card.context_window, tokens=tokens)
