"""The FastAPI gateway. Everything it needs is built once in `lifespan` and put on `app.state`.

uvicorn --factory service.app:create_app      # or: python -m service
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI

from core.engine import Engine
from core.protocols import Retriever
from service.documents import DocumentStore
from service.engines import build_engine
from service.errors import install_error_handlers
from service.feedback import FeedbackStore
from service.metrics import Metrics, MetricsMiddleware
from service.routes import admin, ask, chat, feedback, health, models, tokenize, web
from service.security import BodyLimitMiddleware
from service.served_models import resolve_models
from service.settings import ServiceSettings
from service.strategies import Strategies, StrategyContext

log = logging.getLogger(__name__)


def _warm_up(retriever: Retriever) -> None:
    """Load the embedder and the index now rather than on the first question."""
    try:
        if retriever.version > 0:
            retriever.search("warm-up", 1, "dense")
    except Exception as e:  # the gateway still serves closed_book; /readyz reports the index
        log.warning("the index is not usable at start-up: %s: %s", type(e).__name__, e)


def strategy_context(settings: ServiceSettings, engine: Engine, retriever: Retriever) -> StrategyContext:
    """What the strategies share, for a started engine (the gateway's lifespan and the eval harness)."""
    cards = engine.models()
    chat_names = [c.name for c in cards if c.role == "chat"]
    chat_model = settings.model_name if settings.model_name in chat_names else chat_names[0]
    return StrategyContext(
        engine=engine,
        retriever=retriever,
        documents=DocumentStore(settings.resolved_database_url),
        settings=settings,
        chat_model=chat_model,
        cpt_model=next((c.name for c in cards if c.role == "cpt"), None),
    )


def create_app(
    settings: ServiceSettings | None = None,
    *,
    engine: Engine | None = None,
    retriever: Retriever | None = None,
) -> FastAPI:
    """The app. `engine` and `retriever` replace the ones built from settings (tests, benchmarks)."""
    settings = settings or ServiceSettings()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        settings.ensure_home()
        url = settings.resolved_database_url
        the_engine = engine
        if the_engine is None:
            the_engine = build_engine(settings, resolve_models(settings))
        await the_engine.start()
        try:
            the_retriever = retriever
            if the_retriever is None:
                from indexer.retriever import IndexRetriever

                the_retriever = IndexRetriever(settings)
            await asyncio.to_thread(_warm_up, the_retriever)
            ctx = strategy_context(settings, the_engine, the_retriever)
            app.state.settings = settings
            app.state.engine = the_engine
            app.state.retriever = the_retriever
            app.state.strategies = Strategies(ctx)
            app.state.feedback = FeedbackStore(url)
            app.state.metrics = Metrics(the_engine.queue_depth, the_engine.running)
            log.info(
                "gateway ready: engine %s, models %s, auth %s",
                the_engine.kind, ", ".join(c.name for c in the_engine.models()),
                "on" if settings.api_key else "off",
            )  # fmt: skip
            yield
        finally:
            await the_engine.aclose()

    app = FastAPI(
        title="keepcurrent",
        summary="An LLM gateway that keeps a model's knowledge current: closed book, RAG, long context, CPT.",
        version="0.1.0",
        lifespan=lifespan,
    )
    app.state.settings = settings
    install_error_handlers(app)
    for module in (chat, models, ask, tokenize, feedback, health, admin, web):
        app.include_router(module.router)
    app.add_middleware(BodyLimitMiddleware, max_bytes=settings.max_body_bytes)
    app.add_middleware(MetricsMiddleware, metrics=lambda: getattr(app.state, "metrics", None))
    return app
