"""cpt: closed book on the newest CPT checkpoint (the new knowledge lives in its weights)."""

from __future__ import annotations

from service.errors import NotFound
from service.protocol import StrategyName
from service.strategies.closed_book import ClosedBook

NO_CPT = (
    "no CPT checkpoint configured: train one (`python -m trainer cpt`, which registers it) or set "
    "KC_CPT_MODEL to its directory (vllm engine: add its server to KC_VLLM_URLS as KC_CPT_MODEL_NAME)"
)


class ContinuedPretraining(ClosedBook):
    name: StrategyName = "cpt"

    def model(self, requested: str | None) -> str:
        # The strategy is the model: whatever `model` a chat request names, cpt answers with the CPT one.
        if self.ctx.cpt_model is None:
            raise NotFound(NO_CPT, code="no_cpt_checkpoint", param="strategy")
        return self.ctx.cpt_model
