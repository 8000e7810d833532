"""The RBAC objects as the authorizer reads them from the generic `objects` table.

`auth.rbac_store` decides; these are its reads. Every write to a Role, ClusterRole,
RoleBinding or ClusterRoleBinding appends a row to the `changes` log, so the newest change
id of each of the four resources is a version of "the RBAC data" (`rbac_version`, one
indexed query). The bodies are read lazily, one role or one namespace's bindings at a time,
with indexed lookups on (resource, namespace, name).
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import select

from imageregistry import apigroups
from imageregistry.metadata.db import Database
from imageregistry.metadata.tables import objects

ROLES = f"roles.{apigroups.RBAC}"
CLUSTER_ROLES = f"clusterroles.{apigroups.RBAC}"
ROLE_BINDINGS = f"rolebindings.{apigroups.RBAC}"
CLUSTER_ROLE_BINDINGS = f"clusterrolebindings.{apigroups.RBAC}"
RBAC_RESOURCES = (ROLES, CLUSTER_ROLES, ROLE_BINDINGS, CLUSTER_ROLE_BINDINGS)

# One scalar subquery per resource so both SQLite and PostgreSQL answer each from the end of
# the (resource, id) index instead of scanning every change of the four resources. The keys
# are constants of this module, never user input.
_VERSION_SQL = "SELECT " + ", ".join(
    f"(SELECT max(id) FROM changes WHERE resource = '{key}')" for key in RBAC_RESOURCES
)
# The same version as columns another statement can read in passing (the manifest pull
# statement does, `oci.pull`), so a decision there costs no query of its own.
VERSION_COLUMNS = tuple(
    f"(SELECT max(v.id) FROM changes v WHERE v.resource = '{key}')" for key in RBAC_RESOURCES
)


def rbac_version(db: Database) -> tuple[int, ...]:
    """The newest change id of each RBAC resource (0 where none), in `RBAC_RESOURCES` order."""
    row = db.fetch_one_raw(_VERSION_SQL)
    return tuple(int(v or 0) for v in (row or ()))


def object_body(db: Database, resource: str, namespace: str, name: str) -> Any:
    """The stored body of one object, or None."""
    with db.read() as conn:
        return conn.execute(
            select(objects.c.body).where(
                objects.c.resource == resource,
                objects.c.namespace == namespace,
                objects.c.name == name,
            )
        ).scalar()


def object_bodies(db: Database, resource: str, namespace: str) -> list[Any]:
    """The stored bodies of every object of `resource` in `namespace` ("" : cluster-scoped)."""
    with db.read() as conn:
        return list(
            conn.execute(
                select(objects.c.body).where(
                    objects.c.resource == resource, objects.c.namespace == namespace
                )
            ).scalars()
        )
