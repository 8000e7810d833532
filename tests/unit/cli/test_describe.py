"""kubectl's generic describer layout and go-yaml scalar quoting, reproduced by `ac`."""

from __future__ import annotations

from imageregistry.cli.ac.describe import describe_object, smart_label, tabwrite
from imageregistry.cli.ac.printers import go_yaml_needs_quotes, to_yaml


def test_labels_split_camel_case_and_keep_acronyms() -> None:
    assert smart_label("dockerImageManifest") == "Docker Image Manifest"
    assert smart_label("uid") == "UID" and smart_label("apiVersion") == "API Version"
    assert smart_label("image.alauda.io/managed") == "image.alauda.io/managed"


def test_tabwriter_aligns_each_block_of_lines_separately() -> None:
    out = tabwrite(["Name:\tx", "Long Name:\ty", "Block:", "  A:\t1", "  Longer:\t2", "End:\t3"])
    assert out.splitlines() == [
        "Name:       x",
        "Long Name:  y",
        "Block:",
        "  A:       1",
        "  Longer:  2",
        "End:       3",
    ]


def test_describe_prints_every_field_sorted_with_events_last() -> None:
    obj = {
        "apiVersion": "image.alauda.io/v1",
        "kind": "ImageStream",
        "metadata": {"name": "demo", "namespace": "t", "labels": {"b": "2", "a": "1"}},
        "spec": {"lookupPolicy": {"local": False}, "tags": ["x"]},
    }
    assert describe_object(obj).splitlines() == [
        "Name:         demo",
        "Namespace:    t",
        "Labels:       a=1",
        "              b=2",
        "Annotations:  <none>",
        "API Version:  image.alauda.io/v1",
        "Kind:         ImageStream",
        "Metadata:",
        "Spec:",
        "  Lookup Policy:",
        "    Local:  false",
        "  Tags:",
        "    x",
        "Events:  <none>",
    ]


def test_yaml_quotes_what_go_yaml_quotes() -> None:
    assert go_yaml_needs_quotes("y") and go_yaml_needs_quotes("0x1F")
    assert go_yaml_needs_quotes("2026-01-01") and go_yaml_needs_quotes("1.5e3")
    assert not go_yaml_needs_quotes("v1.0") and not go_yaml_needs_quotes("sha256:abc")
    assert to_yaml({"a": '{"k": 1}', "b": "y", "c": "plain"}) == (
        'a: \'{"k": 1}\'\nb: "y"\nc: plain\n'
    )
