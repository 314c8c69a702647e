"""``@client.task(stage)``: the decorator form of ``client.stage(...)`` for sync and async functions."""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable, Coroutine
from typing import Any, ParamSpec, TypeVar, cast

from stagewatch.sdk.diagnostics import log
from stagewatch.sdk.scope import StageScope

P = ParamSpec("P")
R = TypeVar("R")

ItemSelector = str | Callable[[dict[str, Any]], Any]
"""The name of the argument holding the item id, or a function of the bound arguments returning it."""

OpenStage = Callable[..., StageScope]


def task_decorator(
    open_stage: OpenStage, stage: str, item_id: ItemSelector, stage_kwargs: dict[str, Any]
) -> Callable[[Callable[P, R]], Callable[P, R]]:
    """A decorator that runs each call of a function inside ``open_stage(stage, <item id>, ...)``."""

    def decorate(fn: Callable[P, R]) -> Callable[P, R]:
        signature = inspect.signature(fn)
        _check_selector(fn, signature, item_id)
        if inspect.iscoroutinefunction(fn):
            return cast(
                Callable[P, R], _async_wrapper(fn, signature, open_stage, stage, item_id, stage_kwargs)
            )

        @functools.wraps(fn)
        def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
            item = _item_of(fn, signature, item_id, args, kwargs)
            if item is None:
                return fn(*args, **kwargs)
            with open_stage(stage, item, **stage_kwargs):
                return fn(*args, **kwargs)

        return wrapper

    return decorate


def _async_wrapper(
    fn: Callable[..., Coroutine[Any, Any, Any]],
    signature: inspect.Signature,
    open_stage: OpenStage,
    stage: str,
    item_id: ItemSelector,
    stage_kwargs: dict[str, Any],
) -> Callable[..., Coroutine[Any, Any, Any]]:
    @functools.wraps(fn)
    async def wrapper(*args: Any, **kwargs: Any) -> Any:
        item = _item_of(fn, signature, item_id, args, kwargs)
        if item is None:
            return await fn(*args, **kwargs)
        async with open_stage(stage, item, **stage_kwargs):
            return await fn(*args, **kwargs)

    return wrapper


def _check_selector(fn: Callable[..., Any], signature: inspect.Signature, item_id: ItemSelector) -> None:
    # A wrong argument name is a mistake in the code, found when the module is imported, not at 3 a.m.
    if callable(item_id):
        return
    accepts_any = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in signature.parameters.values())
    if item_id not in signature.parameters and not accepts_any:
        names = ", ".join(signature.parameters) or "none"
        raise TypeError(f"@task: {fn.__qualname__} has no argument {item_id!r} (its arguments: {names})")


def _item_of(
    fn: Callable[..., Any],
    signature: inspect.Signature,
    item_id: ItemSelector,
    args: tuple[Any, ...],
    kwargs: dict[str, Any],
) -> str | None:
    """The item id of one call; None (the call then runs unreported) if it cannot be found."""
    try:
        bound = signature.bind(*args, **kwargs)
    except TypeError:
        return None  # the call itself is wrong: let the function raise its own TypeError
    try:
        bound.apply_defaults()
        arguments = dict(bound.arguments)
        value = item_id(arguments) if callable(item_id) else _named(signature, arguments, item_id)
    except Exception:
        log.exception("sdk.task.item_id_failed function=%s: this call is not reported", fn.__qualname__)
        return None
    if value is None:
        log.error("sdk.task.no_item_id function=%s: the item id is None; not reported", fn.__qualname__)
        return None
    return str(value)


def _named(signature: inspect.Signature, arguments: dict[str, Any], name: str) -> Any:
    if name in arguments:
        return arguments[name]
    for parameter in signature.parameters.values():  # passed through **kwargs
        if parameter.kind is inspect.Parameter.VAR_KEYWORD and name in arguments.get(parameter.name, {}):
            return arguments[parameter.name][name]
    raise KeyError(f"no argument {name!r} in this call")
