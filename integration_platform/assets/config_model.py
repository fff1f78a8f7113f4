"""The YAML model of every component, with input values kept out of validation errors.

Dagster validates a ``defs.yaml`` against a pydantic model it derives from the component class
(``Resolvable.model()``) and rebuilds pydantic's errors with their inputs shown
(``input_value={'type': 'bearer', 'token': 'hunter2'}``, ``dagster._utils.pydantic_yaml``), so a
secret written inline by mistake (refused because secrets come only by ``*_env`` name) was
repeated in the very error that refused it, and from there in Dagster's load errors and logs.
:class:`SecretSafeComponent` replaces each error's input with :data:`HIDDEN` before Dagster sees
it; the errors still name the file, line, field and rule. Dagster then builds the component (and
its nested models) from the validated attributes, a second validation: :class:`SafeModel`, the base
of every model here, hides inputs there too.
"""

import difflib
from typing import Any, get_args

import dagster as dg
from dagster._utils.schedules import is_valid_cron_string
from pydantic import (
    BaseModel,
    ConfigDict,
    TypeAdapter,
    ValidationError,
    ValidatorFunctionWrapHandler,
    model_validator,
)
from pydantic_core import InitErrorDetails

HIDDEN = "<hidden>"


def _takes_model(annotation: Any) -> bool:
    """Whether a derived field's type offers a model (``SomeModel | str``, ``list[SomeModel | str]``)."""
    if isinstance(annotation, type):
        return issubclass(annotation, BaseModel)
    return any(_takes_model(arg) for arg in get_args(annotation))


def _strings_for_models(model: BaseModel) -> list[tuple[str | int, ...]]:
    """Where a plain string stands in for an object. Dagster lets every field be a ``{{ template }}``
    string; anything else there fails only when the component is built, and that error quotes the
    YAML line, value included, so it is refused here first, without the value."""
    found: list[tuple[str | int, ...]] = []
    for name, field in type(model).model_fields.items():
        if not _takes_model(field.annotation):
            continue
        value = getattr(model, name)
        if name not in model.model_fields_set:  # Dagster's "unset" default is a string too
            continue
        items = list(enumerate(value)) if isinstance(value, list) else [(None, value)]
        for index, item in items:
            if isinstance(item, str) and "{{" not in item:
                found.append((name,) if index is None else (name, index))
    return found


def _models_in(annotation: Any) -> list[type[BaseModel]]:
    """The models a field's type offers (``SomeModel | str``, ``list[SomeModel]``, a tagged union's
    members, also behind a :func:`typed_union` resolver)."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return [annotation]
    if isinstance(annotation, dg.Resolver) and annotation.model_field_type is not None:
        return _models_in(annotation.model_field_type)
    return [model for arg in get_args(annotation) for model in _models_in(arg)]


def _member(models: list[type[BaseModel]], tag: Any) -> type[BaseModel] | None:
    """The model among ``models`` whose ``type`` field is the literal ``tag`` (a tagged union's member)."""
    for model in models:
        field = model.model_fields.get("type")
        if field is not None and tag in get_args(field.annotation):
            return model
    return None


def _model_in(annotation: Any, data: Any = None) -> type[BaseModel] | None:
    """The model a field's type offers for ``data``: of a tagged union, the member ``data["type"]`` names."""
    models = _models_in(annotation)
    picked = _member(models, data.get("type")) if len(models) > 1 and isinstance(data, dict) else None
    return picked or (models[0] if models else None)


def _unknown_field(cls: type[BaseModel], loc: tuple[Any, ...]) -> ValueError:
    """An unknown field's error that names the fields allowed where it stands, with the closest
    one first when it looks like a typo (``tabels`` -> ``tables``); raised as pydantic's
    ``value_error``, which Dagster's YAML errors re-raise with the file and line."""
    model: type[BaseModel] | None = cls
    candidates = [cls]
    for part in loc[:-1]:
        member = _member(candidates, part) if len(candidates) > 1 else None
        if member is not None:  # a tagged union's member, named by its tag in the location
            model, candidates = member, [member]
        elif isinstance(part, str) and model is not None and part in model.model_fields:
            candidates = _models_in(model.model_fields[part].annotation)
            model = candidates[0] if candidates else None
    allowed = sorted(model.model_fields) if model is not None else []
    name = str(loc[-1])
    # a secret written inline: its field takes the environment variable's name instead
    close = [f"{name}_env"] if f"{name}_env" in allowed else difflib.get_close_matches(name, allowed, n=1)
    hint = f"did you mean {close[0]!r}? " if close else ""
    return ValueError(f"unknown field {loc[-1]!r}; {hint}allowed: {', '.join(allowed)}")


#: Dagster's derived model of a component -> the component's own model (its true field types).
_SOURCE_MODELS: dict[type[BaseModel], type[BaseModel]] = {}
#: Component class -> its derived model with hidden inputs (built once).
_DERIVED_MODELS: dict[type, type[BaseModel]] = {}


def _leaf_types(annotation: Any) -> set[Any]:
    args = get_args(annotation)
    return set().union(*map(_leaf_types, args)) if args else {annotation}


def _text_for_numbers(model: type[BaseModel], data: Any, loc: tuple[str | int, ...] = ()) -> list[InitErrorDetails]:
    """Text where a number belongs (``lag: "five minutes"``), found on the component's own model.
    Dagster's derived model lets every field also be a template string, and pydantic then fails
    inside a number's bound (``ge=0``) with a bare ``TypeError`` naming neither file nor field;
    found here first, the error names both."""
    found: list[InitErrorDetails] = []
    if not isinstance(data, dict):
        return found
    for name, value in data.items():
        field = model.model_fields.get(name) if isinstance(name, str) else None
        if field is None:
            continue
        leaves = _leaf_types(field.annotation)
        if isinstance(value, str) and "{{" not in value and leaves & {int, float} and str not in leaves:
            kind = "int_type" if float not in leaves else "float_type"  # YAML text, even "5": write 5
            found.append(InitErrorDetails(type=kind, loc=(*loc, name), input=HIDDEN))
        elif _models_in(field.annotation):
            items = list(enumerate(value)) if isinstance(value, list) else [(None, value)]
            for index, item in items:
                where = (*loc, name) if index is None else (*loc, name, index)
                nested = _model_in(field.annotation, item)
                found += _text_for_numbers(nested, item, where) if nested is not None else []
    return found


def _readable(loc: tuple[str | int, ...]) -> tuple[str | int, ...]:
    """``loc`` without pydantic's labels of union branches (``tagged-union[function-after[...], ...]``,
    ``tuple[RestStreamModel, ...]``): what is left reads as the YAML does,
    ``attributes.streams.0.paginator.offset.limit`` (a tagged union's member is named by its tag)."""
    return tuple(part for part in loc if not (isinstance(part, str) and part.startswith(("tagged-union[", "tuple["))))


def _hide_inputs(cls: type[BaseModel], data: Any, handler: ValidatorFunctionWrapHandler) -> Any:
    source = _SOURCE_MODELS.get(cls)
    wrong = _text_for_numbers(source, data) if source is not None else []
    if wrong:
        raise ValidationError.from_exception_data(cls.__name__, wrong, hide_input=True)
    try:
        result = handler(data)
    except ValidationError as exc:
        details = [
            InitErrorDetails(
                type="value_error", loc=_readable(e["loc"]), input=HIDDEN, ctx={"error": _unknown_field(cls, e["loc"])}
            )
            if e["type"] == "extra_forbidden"
            else InitErrorDetails(type=e["type"], loc=_readable(e["loc"]), input=HIDDEN, ctx=e.get("ctx", {}))
            for e in exc.errors(include_url=False)
        ]
        raise ValidationError.from_exception_data(exc.title, details, hide_input=True) from None
    misplaced = _strings_for_models(result)
    if misplaced:
        details = [InitErrorDetails(type="dict_type", loc=loc, input=HIDDEN) for loc in misplaced]
        raise ValidationError.from_exception_data(cls.__name__, details, hide_input=True)
    return result


class SecretSafeComponent:
    """Mixin for a ``dg.Component``: its YAML model's validation errors never quote input values."""

    @classmethod
    def get_model_cls(cls) -> type[BaseModel] | None:
        """Dagster's derived model of the component, subclassed with a wrap validator that hides inputs."""
        if cls in _DERIVED_MODELS:  # Dagster asks on every load: one derived class per component class
            return _DERIVED_MODELS[cls]
        base: type[BaseModel] | None = super().get_model_cls()  # type: ignore[misc]
        if base is None or getattr(base, "_inputs_hidden", False):
            return base
        namespace: dict[str, Any] = {
            "__module__": base.__module__,
            "_inputs_hidden": True,
            "hide_inputs": model_validator(mode="wrap")(classmethod(_hide_inputs)),  # type: ignore[arg-type]
        }
        derived: type[BaseModel] = type(base.__name__, (base,), namespace)
        if issubclass(cls, BaseModel):
            _SOURCE_MODELS[derived] = cls
        _DERIVED_MODELS[cls] = derived
        return derived


class SafeModel(dg.Model):
    """``dg.Model`` (unknown fields refused) whose validation errors never quote input values."""

    model_config = ConfigDict(hide_input_in_errors=True)


def cron_problem(value: str) -> str | None:
    """Why ``value`` is not a cron string Dagster's schedules take (five fields, UTC), or ``None``.

    Dagster's own rule (``dagster._utils.schedules.is_valid_cron_string``: croniter's, plus five
    fields and no 30th/31st of February) is the one a schedule is built with, so it is asked here,
    the one place the platform imports it from."""
    if is_valid_cron_string(value):
        return None
    return f"{value!r} is not a valid cron string (five fields, e.g. '0 3 * * *')"


def require_exactly_one(model: BaseModel, first: str, second: str, where: str = "") -> None:
    """Raise ``ValueError("<where>set exactly one of '<first>' and '<second>'")`` unless exactly one
    of the two fields of ``model`` is set (not ``None``); ``where`` ends with ``": "`` when given."""
    if (getattr(model, first) is None) == (getattr(model, second) is None):
        raise ValueError(f"{where}set exactly one of {first!r} and {second!r}")


def from_env(value: str | None, env: str | None, what: str) -> str:
    """The one value-or-env field: ``dg.EnvVar(env)`` when the name of an environment variable is
    given (read by the resource at run time, never shown in the UI), else ``value``. Raises
    ``ValueError`` naming ``what`` when neither is set (the model's validation normally refused
    that already, with :func:`require_exactly_one`)."""
    if env:
        return dg.EnvVar(env)
    if value is None:
        raise ValueError(f"{what}: set it or the environment variable holding it ({what}_env)")
    return value


def typed_union(union: Any) -> dg.Resolver:
    """The resolver of a field whose YAML is one of several models told apart by their ``type``
    (``Annotated[A | B, Field(discriminator="type")]``, optionally ``| None``): annotate the field
    ``Annotated[<base of the members>, typed_union(<union>)]``.

    Why: Dagster derives the YAML model of a ``dg.Resolvable`` and makes each of its fields
    template-able, ``Literal`` tags included, after which pydantic refuses the discriminator. A
    resolver's ``model_field_type`` is taken as it is, so plain pydantic members keep their tags,
    and an error names the member (``paginator.offset.limit: Field required``). The members being
    plain models, Dagster no longer renders ``{{ templates }}`` inside them: this function renders
    every string of the value (the whole value may be one template too), then validates the result
    against the union, so a rendered value meets the same rules. Raises pydantic's
    ``ValidationError``, inputs hidden (a rendered secret must not be echoed), when it fits no member."""
    adapter: TypeAdapter[Any] = TypeAdapter(union, config=ConfigDict(hide_input_in_errors=True))

    def resolve(context: dg.ResolutionContext, value: Any) -> Any:
        if isinstance(value, BaseModel):
            value = value.model_dump(exclude_unset=True)
        return adapter.validate_python(context.resolve_value(value))

    # inject_before_resolve=False: Dagster would otherwise hand a rendered template's mapping to the
    # model unvalidated, past this function
    return dg.Resolver(resolve, model_field_type=union, inject_before_resolve=False)


def current_asset_keys(deps: list[str]) -> list[str]:
    """``deps`` (asset keys as ``a/b/c``) unchanged, or ``ValueError`` for a warehouse asset named in
    its form from before December 2026 (``warehouse/chinook/invoice``, now
    ``warehouse/chinook.invoice``): Dagster would take it for an asset defined elsewhere and the
    dependency would silently never be met."""
    for dep in deps:
        parts = dep.strip("/").split("/")
        if parts[0] == "warehouse" and len(parts) > 2:
            raise ValueError(f"deps: {dep!r} is a warehouse asset's old key; write 'warehouse/{'.'.join(parts[1:])}'")
    return deps


def secret_from_env(env: str | None) -> str | None:
    """``dg.EnvVar(env)`` for a secret given by environment variable name, or ``None``."""
    return dg.EnvVar(env) if env else None


def port_from_env(value: int | None, env: str | None, default: int) -> int:
    """A port: ``dg.EnvVar.int(env)`` when given by environment variable, else ``value`` or ``default``."""
    return dg.EnvVar.int(env) if env else (value or default)
