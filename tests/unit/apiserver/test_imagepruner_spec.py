"""ImagePruner spec validation: what a scheduled prune refuses before it is stored."""

from __future__ import annotations

from typing import Any

import pytest

from imageregistry.apiserver.imagepruner import spec_causes


def fields(spec: Any) -> list[str]:
    return [cause.field for cause in spec_causes(spec)]


def test_a_complete_valid_spec_has_no_causes() -> None:
    spec = {
        "schedule": "0 * * * *",
        "keepTagRevisions": 3,
        "keepYoungerThanDuration": "72h",
        "suspend": False,
        "pruneRegistry": True,
        "ignoreInvalidImageReferences": False,
        "successfulJobsHistoryLimit": 3,
        "failedJobsHistoryLimit": 1,
    }
    assert spec_causes(spec) == []


@pytest.mark.parametrize("key", ["suspend", "pruneRegistry", "ignoreInvalidImageReferences"])
@pytest.mark.parametrize("value", ["false", 0, 1, "yes", []])
def test_switches_must_be_json_booleans(key: str, value: object) -> None:
    assert fields({key: value}) == [f"spec.{key}"]


@pytest.mark.parametrize("value", [-1, True, "3", 2.5])
def test_counts_must_be_non_negative_integers(value: object) -> None:
    assert fields({"keepTagRevisions": value}) == ["spec.keepTagRevisions"]


def test_schedule_duration_and_shape_are_checked() -> None:
    assert fields({"schedule": "every hour"}) == ["spec.schedule"]
    assert fields({"keepYoungerThanDuration": "3 days"}) == ["spec.keepYoungerThanDuration"]
    assert fields(["not", "an", "object"]) == ["spec"]
