"""Every route a seed dialect serves has a contract example (issue 15): a new endpoint in
a dialect without one fails here."""

from __future__ import annotations

from api.compat import DIALECT_PACKAGES, registry
from tests.compat.contract import covered_endpoints, example_files, load_examples

IGNORED_METHODS = {"HEAD", "OPTIONS"}


def test_every_dialect_has_examples_and_every_route_one(app):
    dialects = registry.all_dialects()
    assert len(dialects) == len(DIALECT_PACKAGES)
    files = {path.name.removesuffix("_examples.json") for path in example_files()}
    missing_files = {d.name for d in dialects} - files
    assert missing_files == set(), "dialects without tests/compat/<name>_examples.json"
    uncovered = []
    for dialect in dialects:
        examples = load_examples(dialect.name)
        for url_prefix, mount in dialect.mounts():
            served = {
                (rule.endpoint, method)
                for rule in app.url_map.iter_rules()
                if rule.endpoint.startswith(f"{mount}.")
                for method in rule.methods - IGNORED_METHODS
            }
            covered = covered_endpoints(app, url_prefix, examples)
            uncovered += sorted(served - covered)
    assert uncovered == [], f"dialect routes without a contract example: {uncovered}"


def test_each_dialect_has_one_tag_in_the_openapi_document(client):
    document = client.get("/api/v1/openapi.json").get_json()
    tags = [t["name"] for t in document["tags"]]
    for dialect in registry.all_dialects():
        assert tags.count(dialect.tag) == 1
        assert not {name for _, name in dialect.mounts()} & set(tags)
        operations = [
            op
            for path, item in document["paths"].items()
            if path.startswith(dialect.base + "/")
            for method, op in item.items()
            if method != "parameters"
        ]
        assert operations and all(op["tags"] == [dialect.tag] for op in operations)
