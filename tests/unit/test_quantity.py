"""Kubernetes quantities as exact integers: what `kubectl create quota --hard` sends."""

from __future__ import annotations

import pytest

from imageregistry.quantity import InvalidQuantity, approx_bytes, format_quantity, parse_quantity


@pytest.mark.parametrize(
    ("text", "value"),
    [
        ("10", 10),
        ("5Gi", 5 << 30),
        ("50Mi", 50 << 20),
        ("1.5Ki", 1536),
        ("1.5G", 1_500_000_000),
        ("2e3", 2000),
        ("1E2", 100),
        ("100m", 1),  # rounded up, as kube's Value() does
        ("0.1", 1),
        (".5Ki", 512),
        (7, 7),
    ],
)
def test_parse(text: str | int, value: int) -> None:
    assert parse_quantity(text) == value


@pytest.mark.parametrize(
    "text", ["", "lots", "-1", "5 Gi", "1Zi", "1e99", "9" * 30, True, None, "1.5.5", "Gi"]
)
def test_refused(text: object) -> None:
    with pytest.raises(InvalidQuantity):
        parse_quantity(text)


def test_format_is_canonical() -> None:
    assert format_quantity(50 << 20, binary=True) == "50Mi"
    assert format_quantity(1536, binary=True) == "1536"
    assert format_quantity(2_000_000, binary=False) == "2M"
    assert format_quantity(0, binary=True) == "0"
    assert approx_bytes(312 << 20) == "312Mi"
    assert approx_bytes(int(4.8 * (1 << 30))) == "4.8Gi"
    assert approx_bytes(900) == "900"
