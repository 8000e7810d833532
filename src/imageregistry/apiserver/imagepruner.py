"""`ImagePruner` in `imageregistry.operator.alauda.io/v1`: the scheduled-prune configuration.

A cluster-scoped singleton named `cluster` (docs/behaviour.md#scheduled-pruning) stored in the
generic object table. Validation here keeps a typo from silently disabling pruning: the schedule
must be a five-field cron expression, `keepYoungerThanDuration` a Go duration, the counts
non-negative integers and the switches JSON booleans. The server's scheduler (`prune/scheduler.py`)
reads it and writes `status`.
"""

from __future__ import annotations

from typing import Any

from imageregistry.apiserver.codec import ANY, object_schema
from imageregistry.apiserver.resource import RequestContext, ResourceInfo
from imageregistry.apiserver.status import FieldCause
from imageregistry.apiserver.store import StoredResource
from imageregistry.metadata.image_pruner import PRUNER_NAME
from imageregistry.prune.cron import CronSchedule, InvalidSchedule
from imageregistry.prune.options import InvalidOptions, parse_duration
from imageregistry.prune.scheduler import OPERATOR_GROUP

_COUNTS = ("keepTagRevisions", "successfulJobsHistoryLimit", "failedJobsHistoryLimit")
_FLAGS = ("suspend", "pruneRegistry", "ignoreInvalidImageReferences")


def spec_causes(spec: Any) -> list[FieldCause]:
    if not isinstance(spec, dict):
        return [FieldCause("spec", "Invalid value: must be an object")]
    causes: list[FieldCause] = []
    schedule = spec.get("schedule", "")
    if schedule:
        try:
            CronSchedule.parse(str(schedule))
        except InvalidSchedule as exc:
            causes.append(FieldCause("spec.schedule", f"Invalid value: {schedule!r}: {exc}"))
    duration = spec.get("keepYoungerThanDuration")
    if duration is not None:
        try:
            parse_duration(str(duration))
        except InvalidOptions as exc:
            causes.append(FieldCause("spec.keepYoungerThanDuration", f"Invalid value: {exc}"))
    for key in _COUNTS:
        value = spec.get(key)
        if value is not None and (
            not isinstance(value, int) or isinstance(value, bool) or value < 0
        ):
            causes.append(
                FieldCause(f"spec.{key}", "Invalid value: must be a non-negative integer")
            )
    # Python would read the string "false" as true: a scheduled prune must not start
    # running registry GC (or stop failing on bad references) because of a quoted value.
    for key in _FLAGS:
        if not isinstance(spec.get(key, False), bool):
            causes.append(FieldCause(f"spec.{key}", "Invalid value: must be a boolean"))
    return causes


class ImagePruners(StoredResource):
    info = ResourceInfo(OPERATOR_GROUP, "imagepruners", "imagepruner", "ImagePruner", False)
    schema = object_schema(spec=ANY, status=ANY)

    def validate(self, ctx: RequestContext, obj: dict[str, Any]) -> list[FieldCause]:
        name = obj["metadata"].get("name")
        if name != PRUNER_NAME:
            return [
                FieldCause("metadata.name", f'Invalid value: {name!r}: must be "{PRUNER_NAME}"')
            ]
        return spec_causes(obj.get("spec") or {})
