"""cpt: closed book on the CPT model (the new knowledge lives in its weights): KC_CPT_MODEL, else the newest
chat-vector merge (`python -m trainer merge`), else the newest raw CPT checkpoint; `POST /admin/reload`
switches to a newer one without a restart."""

from __future__ import annotations

from service.api_schemas import StrategyName
from service.errors import NotFound
from service.strategies.closed_book import ClosedBook

NO_CPT = (
    "no CPT checkpoint configured: train one (`python -m trainer cpt`, then `python -m trainer merge`; both "
    "register it, and POST /admin/reload loads it) or set "
    "KC_CPT_MODEL to its directory (vllm engine: add its server to KC_VLLM_URLS as KC_CPT_MODEL_NAME)"
)


class ContinuedPretraining(ClosedBook):
    name: StrategyName = "cpt"

    def model(self, requested: str | None) -> str:
        # The strategy is the model: whatever `model` a chat request names, cpt answers with the CPT one.
        if self.ctx.cpt_model is None:
            raise NotFound(NO_CPT, code="no_cpt_checkpoint", param="strategy")
        return self.ctx.cpt_model
