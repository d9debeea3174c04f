"""Loading a config: YAML, `--set` overrides, `${...}` interpolation, validation, and errors that
name the dotted key with its file and line."""

from __future__ import annotations

import difflib
import os
import re
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ValidationError

from lmtool.config.errors import ConfigError, LmtoolError
from lmtool.config.finetune import with_finetune_defaults
from lmtool.config.schema import Config
from lmtool.config.yaml_io import compose_and_load, yaml_load


def load_config(path: str | Path | None, overrides: list[str] | tuple[str, ...] = ()) -> Config:
    """Read YAML, apply `--set` overrides, fill defaults, resolve `${...}`, validate."""
    raw: dict[str, Any] = {}
    lines: dict[tuple, int] = {}
    label = "<defaults>"
    if path is not None:
        path = Path(path)
        label = str(path)
        raw, lines = _read_yaml(path)
    override_keys: set[tuple] = set()
    for item in overrides:
        keys, value = parse_override(item)
        _set_path(raw, keys, value, item)
        override_keys.add(tuple(keys))
    raw = with_finetune_defaults(raw)

    located = _Locator(label, lines, override_keys)
    # `${...}` first, so a number or a boolean may come from the environment or another key;
    # then once more for the references in the defaults (e.g. evaluate.model).
    config = _validate(_interpolate(raw, located, _merged(Config().model_dump(mode="python"), raw)), located)
    return _validate(_interpolate(config.model_dump(mode="python"), located), located)


def dump_config(config: Config) -> str:
    return yaml.safe_dump(config.model_dump(mode="json"), sort_keys=False, allow_unicode=True)


def json_schema() -> dict:
    return Config.model_json_schema()


def parse_override(item: str) -> tuple[list[str], Any]:
    if "=" not in item:
        raise ConfigError("--set", "expects key.path=value", value=item)
    key, _, text = item.partition("=")
    key = key.strip()
    if not key or any(not part for part in key.split(".")):
        raise ConfigError("--set", "expects key.path=value with a non-empty dotted key", value=item)
    try:
        value = yaml_load(text) if text.strip() else ""
    except yaml.YAMLError:
        value = text  # not valid YAML: take it as a plain string
    return key.split("."), value


def _read_yaml(path: Path) -> tuple[dict, dict[tuple, int]]:
    if not path.exists():
        raise LmtoolError(f"config file not found: {path}")
    if path.is_dir():
        raise LmtoolError(f"config path is a directory, not a YAML file: {path}")
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise LmtoolError(f"cannot read config file {path}: {exc}") from None
    try:
        node, data = compose_and_load(text, str(path))
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"{path}:{mark.line + 1}" if mark else str(path)
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise LmtoolError(f"{where}: invalid YAML: {problem}") from None
    if data is None:
        return {}, {}
    if not isinstance(data, dict):
        raise LmtoolError(f"{path}: the config must be a YAML mapping (got {type(data).__name__})")
    return data, _line_numbers(node)


def _line_numbers(node: yaml.Node, prefix: tuple = ()) -> dict[tuple, int]:
    lines: dict[tuple, int] = {}
    if isinstance(node, yaml.MappingNode):
        for key_node, value_node in node.value:
            key = prefix + (key_node.value,)
            lines[key] = key_node.start_mark.line + 1
            lines.update(_line_numbers(value_node, key))
    elif isinstance(node, yaml.SequenceNode):
        for index, item in enumerate(node.value):
            key = prefix + (index,)
            lines[key] = item.start_mark.line + 1
            lines.update(_line_numbers(item, key))
    return lines


def _set_path(raw: dict, keys: list[str], value: Any, item: str) -> None:
    target: Any = raw
    for depth, key in enumerate(keys[:-1]):
        if isinstance(target, list):
            target = target[_list_index(target, key, keys[: depth + 1], item)]
            continue
        nxt = target.get(key)
        if nxt is None:
            nxt = target[key] = {}
        elif not isinstance(nxt, dict | list):
            raise ConfigError(
                ".".join(keys[: depth + 1]),
                f"is a value, not a section, so --set {item!r} cannot go inside it",
                has_value=False,
            )
        target = nxt
    last = keys[-1]
    if isinstance(target, list):
        target[_list_index(target, last, keys, item)] = value
    else:
        target[last] = value


def _list_index(target: list, key: str, keys: list[str], item: str) -> int:
    if not key.isdigit() or int(key) >= len(target):
        raise ConfigError(
            ".".join(keys),
            f"is not an index of a list of {len(target)} items (from --set {item!r})",
            has_value=False,
        )
    return int(key)


class _Locator:
    """Says where a dotted key came from: a file line or a --set override."""

    def __init__(self, label: str, lines: dict[tuple, int], overrides: set[tuple]):
        self.label, self.lines, self.overrides = label, lines, overrides

    def where(self, loc: tuple) -> str | None:
        loc = tuple(str(p) if not isinstance(p, int) else p for p in loc)
        for cut in range(len(loc), 0, -1):
            key = loc[:cut]
            if tuple(str(k) for k in key) in {tuple(str(k) for k in o) for o in self.overrides}:
                return "from --set"
            if key in self.lines:
                return f"{self.label}:{self.lines[key]}"
        return None


def _validate(raw: dict, located: _Locator) -> Config:
    try:
        return Config.model_validate(raw)
    except ConfigError as exc:  # a validator's own error, naming its key: add where that key was set
        where = located.where(tuple(exc.key.split(".")))
        if where:
            exc.args = (f"{exc.args[0]} [{where}]",)
        raise
    except ValidationError as exc:
        errors = exc.errors()
        first = _strip_union_tags(errors[0]["loc"])
        # A union field (e.g. `bool | "auto"`) fails once per member: say all the ways it could be right.
        alternatives = [e["msg"].split(", unable")[0] for e in errors if _strip_union_tags(e["loc"]) == first]
        err = dict(errors[0], loc=first)
        if len(alternatives) > 1:
            err["msg"] = " or ".join(m.removeprefix("Input should be ") for m in alternatives)
            err["msg"] = "Input should be " + err["msg"]
        raise _config_error(err, located) from None


def _config_error(err: dict, located: _Locator) -> ConfigError:
    loc = err["loc"]
    key = ".".join(str(p) for p in loc)
    where = located.where(loc)
    kind = err["type"]
    if kind == "extra_forbidden":
        options = _fields_at(loc[:-1])
        close = difflib.get_close_matches(str(loc[-1]), options, n=1, cutoff=0.5)
        hint = f"did you mean '{'.'.join([*map(str, loc[:-1]), close[0]])}'?" if close else None
        if not close and options:
            hint = f"known keys here: {', '.join(sorted(options))}"
        return ConfigError(key, "unknown key", value=err.get("input"), hint=hint, location=where)
    message = err["msg"]
    if message.startswith("Value error, "):
        message = message[len("Value error, ") :]
    if kind == "missing":
        return ConfigError(key, "is required", has_value=False, location=where)
    value = err.get("input")
    has_value = not isinstance(value, dict)
    return ConfigError(
        key or "config", message[0].lower() + message[1:], value=value, has_value=has_value, location=where
    )


def _strip_union_tags(loc: tuple) -> tuple:
    """Drop the union-member tags pydantic adds to a location (e.g. `bool`, `literal['auto']`)."""
    out: list = []
    model: Any = Config
    for part in loc:
        fields = getattr(model, "model_fields", None)
        if isinstance(part, int):
            out.append(part)
        elif fields is not None:
            out.append(part)
            model = _section_type(fields[part].annotation) if part in fields else None
        elif not _is_union_tag(part):
            out.append(part)
    return tuple(out)


def _is_union_tag(part: str) -> bool:
    return part in ("int", "float", "str", "bool", "none") or part.startswith(
        ("literal[", "list[", "dict[", "tuple[", "function-")
    )


def _section_type(annotation: Any) -> Any:
    """The Section class behind an annotation such as `SourceConfig | None` or `list[SourceConfig]`."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    for arg in getattr(annotation, "__args__", ()) or ():
        found = _section_type(arg)
        if found is not None:
            return found
    return None


def _fields_at(loc: tuple) -> list[str]:
    model: Any = Config
    for part in loc:
        if isinstance(part, int):
            continue
        fields = getattr(model, "model_fields", {})
        if part not in fields:
            return []
        model = _section_type(fields[part].annotation)
        if model is None:
            return []
    return list(getattr(model, "model_fields", {}))


def settable_keys(model: Any = Config, prefix: str = "") -> list[str]:
    """Every dotted key `--set` can reach without a list index (`train.max_steps`, `run.output_dir`)."""
    keys: list[str] = []
    for name, field in model.model_fields.items():
        section = _section_type(field.annotation)
        if getattr(field.annotation, "__origin__", None) is list:
            continue
        if section is not None and section is not model:
            keys += settable_keys(section, f"{prefix}{name}.")
        else:
            keys.append(f"{prefix}{name}")
    return keys


_REF = re.compile(r"\$\{([^}]+)\}")


def _merged(base: dict, over: dict) -> dict:
    """`over` on top of `base`, section by section."""
    out = dict(base)
    for key, value in over.items():
        both = isinstance(value, dict) and isinstance(base.get(key), dict)
        out[key] = _merged(base[key], value) if both else value
    return out


def _in_free_form(key: str) -> bool:
    """Whether a dotted key lies in a free-form mapping (model.config), whose values no schema types."""
    model: Any = Config
    for part in key.split("."):
        fields = getattr(model, "model_fields", {})
        if part.isdigit():
            continue
        if part not in fields:
            return False
        if getattr(fields[part].annotation, "__origin__", None) is dict:
            return True
        model = _section_type(fields[part].annotation)
    return False


def _interpolate(data: dict, located: _Locator, root: dict | None = None) -> dict:
    """Replace `${a.b}` by the value at a.b (looked up in `root`, default `data`) and `${env:NAME}` by an
    environment variable. The result is a string, which the schema turns into the number or boolean a
    field wants; in model.config a value that is one whole `${...}` is read as YAML, like a --set value."""
    root = data if root is None else root

    def lookup(ref: str, key: str, seen: tuple[str, ...]) -> str:
        if ref.startswith("env:"):
            name = ref[4:]
            if not os.environ.get(name):  # an empty value would fail later, naming no variable
                state = "empty" if name in os.environ else "not set"
                raise ConfigError(
                    key,
                    f"refers to environment variable {name}, which is {state}",
                    has_value=False,
                    location=located.where(tuple(key.split("."))),
                )
            return os.environ[name]
        if ref in seen:
            raise ConfigError(key, f"circular reference ${{{ref}}}", has_value=False)
        target: Any = root
        for part in ref.split("."):
            if isinstance(target, dict) and part in target:
                target = target[part]
            elif isinstance(target, list) and part.isdigit() and int(part) < len(target):
                target = target[int(part)]
            else:
                raise ConfigError(
                    key,
                    f"refers to ${{{ref}}}, which is not a config key",
                    has_value=False,
                    location=located.where(tuple(key.split("."))),
                )
        if isinstance(target, dict | list):
            raise ConfigError(key, f"refers to ${{{ref}}}, which is a section, not a value", has_value=False)
        return resolve(target, ref, (*seen, ref)) if isinstance(target, str) else str(target)

    def resolve(value: Any, key: str, seen: tuple[str, ...] = ()) -> Any:
        if isinstance(value, str):
            text = _REF.sub(lambda m: lookup(m.group(1).strip(), key, seen or (key,)), value)
            if text != value and _REF.fullmatch(value.strip()) and not seen and _in_free_form(key):
                try:
                    return yaml_load(text)
                except yaml.YAMLError:
                    return text
            return text
        if isinstance(value, dict):
            return {k: resolve(v, f"{key}.{k}" if key else str(k)) for k, v in value.items()}
        if isinstance(value, list):
            return [resolve(v, f"{key}.{i}") for i, v in enumerate(value)]
        return value

    return resolve(data, "")


# =========================================================================== path checks
