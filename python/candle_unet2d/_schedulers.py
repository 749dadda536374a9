"""The scheduler classes, one per entry of the Rust registry (``candle_unet2d._core.scheduler_classes``).

Each class is a ``SchedulerMixin`` subclass whose ``_class_name`` tells the Rust side which scheduler it
builds; scheduler-specific methods (``ScoreSdeVeScheduler.step_pred``, ``RePaintScheduler.undo_step``, …)
are added from the registry too, so a new scheduler needs no code here. ``_schedulers.pyi`` declares the
classes for type checkers (a test keeps it equal to the registry).
"""

from __future__ import annotations

from typing import Any

from ._core import SchedulerMixin, scheduler_classes


def _method(name: str, params: list[str]) -> Any:
    def method(self: SchedulerMixin, *args: Any, **kwargs: Any) -> Any:
        return self._call_method(name, *args, **kwargs)

    method.__name__ = name
    method.__qualname__ = name
    method.__doc__ = f"diffusers' ``{name}({', '.join(params)}, generator=None, return_dict=True)``."
    return method


def _make_class(name: str, short_name: str, summary: str, default_steps: int, methods: Any, compatibles: Any) -> type:
    namespace: dict[str, Any] = {
        "__module__": "candle_unet2d",
        "__qualname__": name,
        "__doc__": f"diffusers' ``{name}``: {summary} (CLI name ``{short_name}``, {default_steps} steps by default).",
        "_class_name": name,
        "_compatibles": list(compatibles),
        "_default_steps": default_steps,
    }
    for method_name, params in methods:
        namespace[method_name] = _method(method_name, list(params))
    return type(name, (SchedulerMixin,), namespace)


__all__: list[str] = []
for _entry in scheduler_classes():
    _cls = _make_class(*_entry)
    globals()[_cls.__name__] = _cls
    __all__ += [_cls.__name__]
del _entry, _cls
