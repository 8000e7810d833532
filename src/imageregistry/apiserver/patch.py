"""PATCH bodies: JSON merge patch (RFC 7386), JSON patch (RFC 6902), and strategic merge.

kubectl sends `application/merge-patch+json` for non-built-in kinds (`apply` of an
ImageStream) and `application/strategic-merge-patch+json` for built-in kinds (`label`,
`annotate`, `edit`, `apply` of a RoleBinding). Strategic merge: maps merge as in RFC 7386;
lists are replaced whole (RBAC `rules` and `subjects` are atomic in upstream too) except the
ones the built-in kinds here declare with a patch merge key (`metadata.ownerReferences` by
`uid`, ServiceAccount `secrets` by `name`) — merged element by element, `{"$patch":
"delete"}` elements removed, `$setElementOrder/<field>` honoured — and `metadata.finalizers`,
a merged set (`$deleteFromPrimitiveList/finalizers` removes). `$retainKeys` is ignored.
"""

from __future__ import annotations

import copy
from typing import Any

from imageregistry.apiserver.status import ApiError, bad_request
from imageregistry.httpinput import parse_int

MERGE = "application/merge-patch+json"
JSON_PATCH = "application/json-patch+json"
STRATEGIC = "application/strategic-merge-patch+json"


def merge_patch(target: Any, patch: Any) -> Any:
    """RFC 7386: objects merge recursively, null deletes, anything else replaces."""
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    result = dict(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        else:
            result[key] = merge_patch(result.get(key), value)
    return result


def _strip_directives(patch: Any) -> Any:
    if isinstance(patch, dict):
        if patch.get("$patch") == "delete":
            return None
        return {k: _strip_directives(v) for k, v in patch.items() if not k.startswith("$")}
    if isinstance(patch, list):
        return [_strip_directives(v) for v in patch if not (isinstance(v, dict) and "$patch" in v)]
    return patch


# path of dotted map keys -> merge key ("" = a list of primitives merged as a set)
MERGE_KEYS: dict[str, str] = {
    "metadata.ownerReferences": "uid",
    "metadata.finalizers": "",
    "secrets": "name",
}


def _merge_keyed(target: Any, patch: list[Any], key: str, order: Any, path: str) -> list[Any]:
    result = [copy.deepcopy(e) for e in target] if isinstance(target, list) else []
    for element in patch:
        if not isinstance(element, dict) or key not in element:
            raise bad_request(f"{path}: each element needs the merge key {key!r}")
        found = next(
            (i for i, e in enumerate(result) if isinstance(e, dict) and e.get(key) == element[key]),
            None,
        )
        if element.get("$patch") == "delete":
            if found is not None:
                result.pop(found)
        elif found is None:
            result.append(_strategic(None, element, ""))
        else:
            result[found] = _strategic(result[found], element, "")
    if isinstance(order, list):
        rank = {e.get(key): i for i, e in enumerate(order) if isinstance(e, dict)}
        result.sort(key=lambda e: rank.get(e.get(key) if isinstance(e, dict) else None, len(rank)))
    return result


def _merge_set(target: Any, patch: list[Any], removed: Any) -> list[Any]:
    result = list(target) if isinstance(target, list) else []
    result += [v for v in patch if v not in result]
    drop = removed if isinstance(removed, list) else []
    return [v for v in result if v not in drop]


def _strategic(target: Any, patch: Any, path: str) -> Any:
    if not isinstance(patch, dict):
        return _strip_directives(patch)
    if patch.get("$patch") == "replace":
        return _strip_directives(patch)
    result = dict(target) if isinstance(target, dict) else {}
    for name, value in patch.items():
        if name.startswith("$"):
            continue
        here = f"{path}.{name}" if path else name
        if value is None or (isinstance(value, dict) and value.get("$patch") == "delete"):
            result.pop(name, None)
        elif here in MERGE_KEYS and isinstance(value, list):
            key = MERGE_KEYS[here]
            if key:
                order = patch.get(f"$setElementOrder/{name}")
                result[name] = _merge_keyed(result.get(name), value, key, order, here)
            else:
                removed = patch.get(f"$deleteFromPrimitiveList/{name}")
                result[name] = _merge_set(result.get(name), value, removed)
        else:
            result[name] = _strategic(result.get(name), value, here)
    for name, removed in patch.items():
        field = name.removeprefix("$deleteFromPrimitiveList/")
        if field != name and f"{path}.{field}".lstrip(".") in MERGE_KEYS and field not in patch:
            result[field] = _merge_set(result.get(field), [], removed)
    return result


def strategic_merge_patch(target: Any, patch: Any) -> Any:
    return _strategic(target, patch, "")


def _pointer(path: str) -> list[str]:
    if path == "":
        return []
    if not path.startswith("/"):
        raise bad_request(f"invalid JSON pointer {path!r}")
    return [p.replace("~1", "/").replace("~0", "~") for p in path[1:].split("/")]


def _index(container: list[Any], token: str, allow_end: bool) -> int:
    if token == "-" and allow_end:
        return len(container)
    index = parse_int(token, "array index")
    if index > len(container) or (index == len(container) and not allow_end):
        raise bad_request(f"array index {index} out of range")
    return index


def _parent(doc: Any, tokens: list[str]) -> Any:
    node = doc
    for token in tokens[:-1]:
        if isinstance(node, dict) and token in node:
            node = node[token]
        elif isinstance(node, list):
            node = node[_index(node, token, False)]
        else:
            raise bad_request(f"path /{'/'.join(tokens)} does not exist")
    return node


def _get(doc: Any, tokens: list[str]) -> Any:
    if not tokens:
        return doc
    parent = _parent(doc, tokens)
    last = tokens[-1]
    if isinstance(parent, dict) and last in parent:
        return parent[last]
    if isinstance(parent, list):
        return parent[_index(parent, last, False)]
    raise bad_request(f"path /{'/'.join(tokens)} does not exist")


def _remove(doc: Any, tokens: list[str]) -> Any:
    if not tokens:
        raise bad_request("cannot remove the document root")
    parent = _parent(doc, tokens)
    last = tokens[-1]
    if isinstance(parent, dict) and last in parent:
        return parent.pop(last)
    if isinstance(parent, list):
        return parent.pop(_index(parent, last, False))
    raise bad_request(f"path /{'/'.join(tokens)} does not exist")


def _add(doc: Any, tokens: list[str], value: Any, replace: bool = False) -> Any:
    if not tokens:
        return value
    parent = _parent(doc, tokens)
    last = tokens[-1]
    if isinstance(parent, dict):
        if replace and last not in parent:
            raise bad_request(f"path /{'/'.join(tokens)} does not exist")
        parent[last] = value
    elif isinstance(parent, list):
        index = _index(parent, last, not replace)
        if replace:
            parent[index] = value
        else:
            parent.insert(index, value)
    else:
        raise bad_request(f"path /{'/'.join(tokens)} does not exist")
    return doc


def json_patch(target: Any, operations: Any) -> Any:
    """RFC 6902 add, remove, replace, move, copy, test; 400 on a malformed patch, 422 on test."""
    if not isinstance(operations, list):
        raise bad_request("a JSON patch must be a list of operations")
    doc = copy.deepcopy(target)
    for op in operations:
        if not isinstance(op, dict) or not isinstance(op.get("path"), str):
            raise bad_request("each JSON patch operation needs an op and a path")
        kind, tokens = op.get("op"), _pointer(op["path"])
        if kind in ("add", "replace", "test") and "value" not in op:
            raise bad_request(f"{kind} operation needs a value")
        if kind == "add":
            doc = _add(doc, tokens, copy.deepcopy(op["value"]))
        elif kind == "remove":
            _remove(doc, tokens)
        elif kind == "replace":
            doc = _add(doc, tokens, copy.deepcopy(op["value"]), replace=True)
        elif kind in ("move", "copy"):
            source = _pointer(str(op.get("from", "")))
            value = _remove(doc, source) if kind == "move" else copy.deepcopy(_get(doc, source))
            doc = _add(doc, tokens, value)
        elif kind == "test":
            if _get(doc, tokens) != op["value"]:
                raise ApiError(422, "Invalid", f"test operation failed at {op['path']}")
        else:
            raise bad_request(f"unknown JSON patch operation {kind!r}")
    return doc


def apply_patch(content_type: str, target: dict[str, Any], patch: Any) -> dict[str, Any]:
    if content_type == JSON_PATCH:
        result = json_patch(target, patch)
    elif content_type == STRATEGIC:
        result = strategic_merge_patch(target, patch)
    elif content_type == MERGE:
        result = merge_patch(target, patch)
    else:
        raise ApiError(
            415, "UnsupportedMediaType", f"the patch type {content_type!r} is not supported"
        )
    if not isinstance(result, dict):
        raise bad_request("the patched object must be a JSON object")
    return result
