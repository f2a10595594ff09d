"""Hypothesis strategies for the JSON schemas our tools publish: every instance drawn is valid
for the schema, so a test can say what a client that follows the schema may send.

Covers what pydantic generates: `$ref`/`$defs`, `anyOf`/`oneOf`, `const`, `enum`, the scalar
types with their bounds, `pattern`, arrays and objects (required and optional properties, no
others when `additionalProperties` is false). Generated texts and lists are kept short; the
limits themselves are exercised by the tests that break the schema.
"""

from typing import Any

from hypothesis import strategies as st

MAX_TEXT = 60
MAX_ITEMS = 4
JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False) | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3),
    max_leaves=8,
)


def from_schema(schema: dict[str, Any], defs: dict[str, Any] | None = None) -> st.SearchStrategy:
    defs = schema.get("$defs", {}) if defs is None else defs
    if "$ref" in schema:
        return from_schema(defs[schema["$ref"].rsplit("/", 1)[-1]], defs)
    if "const" in schema:
        return st.just(schema["const"])
    if "enum" in schema:
        return st.sampled_from(schema["enum"])
    for union in ("anyOf", "oneOf"):
        if union in schema:
            return st.one_of([from_schema(option, defs) for option in schema[union]])
    kind = schema.get("type")
    if isinstance(kind, list):
        return st.one_of([from_schema({**schema, "type": k}, defs) for k in kind])
    match kind:
        case "null":
            return st.none()
        case "boolean":
            return st.booleans()
        case "integer":
            low = schema.get("minimum", schema.get("exclusiveMinimum", -(2**40) - 1) + 1)
            high = schema.get("maximum", schema.get("exclusiveMaximum", 2**40 + 1) - 1)
            return st.integers(min_value=low, max_value=high)
        case "number":
            return st.floats(
                min_value=schema.get("minimum", schema.get("exclusiveMinimum")),
                max_value=schema.get("maximum", schema.get("exclusiveMaximum")),
                exclude_min="exclusiveMinimum" in schema,
                exclude_max="exclusiveMaximum" in schema,
                allow_nan=False,
                allow_infinity=False,
            )
        case "string":
            return _text(schema)
        case "array":
            items = from_schema(schema.get("items", {}), defs)
            low = schema.get("minItems", 0)
            return st.lists(items, min_size=low, max_size=max(low, min(schema.get("maxItems", MAX_ITEMS), MAX_ITEMS)))
        case "object":
            properties = {k: from_schema(v, defs) for k, v in schema.get("properties", {}).items()}
            required = set(schema.get("required", []))
            return st.fixed_dictionaries(
                {k: v for k, v in properties.items() if k in required},
                optional={k: v for k, v in properties.items() if k not in required},
            )
    return JSON


def _text(schema: dict[str, Any]) -> st.SearchStrategy:
    low, high = schema.get("minLength", 0), min(schema.get("maxLength", MAX_TEXT), MAX_TEXT)
    if pattern := schema.get("pattern"):
        # pydantic searches for the pattern; an anchored one must match the whole text, with no
        # trailing newline (which Python's `$` would allow and pydantic's does not).
        anchored = pattern.startswith("^") and pattern.endswith("$")
        texts = st.from_regex(pattern[1:-1], fullmatch=True) if anchored else st.from_regex(pattern)
        return texts.filter(lambda s: low <= len(s) <= schema.get("maxLength", len(s)))
    return st.text(min_size=low, max_size=max(low, high))
