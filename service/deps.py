"""FastAPI dependencies: the objects the lifespan put on `app.state`, as `Annotated` types for routes."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from core.engine import Engine
from core.protocols import Retriever
from service.feedback import FeedbackStore
from service.metrics import Metrics
from service.security import SettingsDep, get_settings
from service.strategies import Strategies

__all__ = [
    "EngineDep",
    "FeedbackDep",
    "MetricsDep",
    "RetrieverDep",
    "SettingsDep",
    "StrategiesDep",
    "get_settings",
]


def get_engine(request: Request) -> Engine:
    engine: Engine = request.app.state.engine
    return engine


def get_strategies(request: Request) -> Strategies:
    strategies: Strategies = request.app.state.strategies
    return strategies


def get_retriever(request: Request) -> Retriever:
    retriever: Retriever = request.app.state.retriever
    return retriever


def get_metrics(request: Request) -> Metrics:
    metrics: Metrics = request.app.state.metrics
    return metrics


def get_feedback(request: Request) -> FeedbackStore:
    store: FeedbackStore = request.app.state.feedback
    return store


EngineDep = Annotated[Engine, Depends(get_engine)]
StrategiesDep = Annotated[Strategies, Depends(get_strategies)]
RetrieverDep = Annotated[Retriever, Depends(get_retriever)]
MetricsDep = Annotated[Metrics, Depends(get_metrics)]
FeedbackDep = Annotated[FeedbackStore, Depends(get_feedback)]
