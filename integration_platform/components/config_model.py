"""The YAML model of every component, with input values kept out of validation errors.

Dagster validates a ``defs.yaml`` against a pydantic model it derives from the component class
(``Resolvable.model()``) and rebuilds pydantic's errors with their inputs shown
(``input_value={'type': 'bearer', 'token': 'hunter2'}``, ``dagster._utils.pydantic_yaml``), so a
secret written inline by mistake (refused because secrets come only by ``*_env`` name) was
repeated in the very error that refused it, and from there in Dagster's load errors and logs.
:class:`SecretSafeComponent` replaces each error's input with :data:`HIDDEN` before Dagster sees
it; the errors still name the file, line, field and rule.
"""

from typing import Any

from pydantic import BaseModel, ValidationError, ValidatorFunctionWrapHandler, model_validator
from pydantic_core import InitErrorDetails

HIDDEN = "<hidden>"


def _hide_inputs(cls: type[BaseModel], data: Any, handler: ValidatorFunctionWrapHandler) -> Any:
    try:
        return handler(data)
    except ValidationError as exc:
        details = [
            InitErrorDetails(type=e["type"], loc=e["loc"], input=HIDDEN, ctx=e.get("ctx", {}))  # type: ignore[typeddict-item]
            for e in exc.errors(include_url=False)
        ]
        raise ValidationError.from_exception_data(exc.title, details, hide_input=True) from None


class SecretSafeComponent:
    """Mixin for a ``dg.Component``: its YAML model's validation errors never quote input values."""

    @classmethod
    def get_model_cls(cls) -> type[BaseModel] | None:
        """Dagster's derived model of the component, subclassed with a wrap validator that hides inputs."""
        base: type[BaseModel] | None = super().get_model_cls()  # type: ignore[misc]
        if base is None or getattr(base, "_inputs_hidden", False):
            return base
        namespace: dict[str, Any] = {
            "__module__": base.__module__,
            "_inputs_hidden": True,
            "hide_inputs": model_validator(mode="wrap")(classmethod(_hide_inputs)),  # type: ignore[arg-type]
        }
        return type(base.__name__, (base,), namespace)
