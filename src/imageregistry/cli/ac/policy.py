"""`ac adm policy add-role-to-user|add-role-to-group|remove-role-from-user ROLE SUBJECT -n NS`.

Granting creates (or extends) a RoleBinding named after the role in the image namespace;
removing takes the subject out of every binding of that role and deletes bindings left
empty. Service accounts are `-z SA` (in the target namespace) or
`system:serviceaccount:NS:SA`. ROLE is a ClusterRole unless `--role-namespace` is given.
"""

from __future__ import annotations

from typing import Any

import click
import httpx

from imageregistry import apigroups
from imageregistry.cli.ac.errors import CliError, from_response
from imageregistry.cli.ac.options import common_options, session

RBAC = apigroups.RBAC
SA_PREFIX = "system:serviceaccount:"


def subject_for(kind: str, name: str, namespace: str) -> dict[str, str]:
    if kind == "ServiceAccount" or name.startswith(SA_PREFIX):
        if name.startswith(SA_PREFIX):
            namespace, _, name = name[len(SA_PREFIX) :].partition(":")
        return {"kind": "ServiceAccount", "name": name, "namespace": namespace}
    return {"kind": kind, "apiGroup": RBAC, "name": name}


def _same(a: dict[str, Any], b: dict[str, Any]) -> bool:
    return all(a.get(k, "") == b.get(k, "") for k in ("kind", "name", "namespace"))


def _bindings(client: httpx.Client, ns: str) -> list[dict[str, Any]]:
    response = client.get(f"/apis/{RBAC}/v1/namespaces/{ns}/rolebindings")
    if response.status_code >= 400:
        raise from_response(response)
    return list(response.json().get("items") or [])


def _grant(
    ctx: click.Context,
    role: str,
    subjects: list[dict[str, str]],
    role_ns: str | None,
    shown: tuple[str, ...],
) -> None:
    sess = session(ctx)
    ns = sess.namespace
    ref_kind = "Role" if role_ns else "ClusterRole"
    path = f"/apis/{RBAC}/v1/namespaces/{ns}/rolebindings"
    with sess.client() as client:
        existing = [
            b
            for b in _bindings(client, ns)
            if b.get("roleRef", {}).get("name") == role and b["roleRef"].get("kind") == ref_kind
        ]
        if existing:
            binding = existing[0]
            current = binding.setdefault("subjects", []) or []
            binding["subjects"] = current + [
                s for s in subjects if not any(_same(s, c) for c in current)
            ]
            response = client.put(f"{path}/{binding['metadata']['name']}", json=binding)
        else:
            name = role.replace(":", "-") if not role_ns else role
            body = {
                "apiVersion": f"{RBAC}/v1",
                "kind": "RoleBinding",
                "metadata": {"name": name, "namespace": ns},
                "roleRef": {"apiGroup": RBAC, "kind": ref_kind, "name": role},
                "subjects": subjects,
            }
            response = client.post(path, json=body)
        if response.status_code >= 400:
            raise from_response(response)
    names = ", ".join(f'"{name}"' for name in shown)
    click.echo(f"{ref_kind.lower()}.{RBAC}/{role} added: {names}")


@click.group("policy")
def policy() -> None:
    """Manage role bindings in a namespace."""


def _subjects(
    kind: str, names: tuple[str, ...], sas: tuple[str, ...], ns: str
) -> list[dict[str, str]]:
    subjects = [subject_for(kind, n, ns) for n in names]
    subjects += [subject_for("ServiceAccount", sa, ns) for sa in sas]
    if not subjects:
        raise CliError("name at least one subject (or -z SERVICEACCOUNT)")
    return subjects


def _role_command(name: str, kind: str) -> click.Command:
    @click.command(name)
    @click.argument("role")
    @click.argument("names", nargs=-1)
    @click.option("-z", "--serviceaccount", "sas", multiple=True, help="Service account name.")
    @click.option("--role-namespace", help="Namespace of a Role (default: a ClusterRole).")
    @common_options
    @click.pass_context
    def command(
        ctx: click.Context,
        role: str,
        names: tuple[str, ...],
        sas: tuple[str, ...],
        role_namespace: str | None,
    ) -> None:
        subjects = _subjects(kind, names, sas, session(ctx).namespace)
        _grant(ctx, role, subjects, role_namespace, names + sas)

    command.help = f"Bind ROLE to {kind.lower()}s in the namespace."
    return command


policy.add_command(_role_command("add-role-to-user", "User"))
policy.add_command(_role_command("add-role-to-group", "Group"))


@policy.command("remove-role-from-user")
@click.argument("role")
@click.argument("names", nargs=-1)
@click.option("-z", "--serviceaccount", "sas", multiple=True, help="Service account name.")
@common_options
@click.pass_context
def remove_role_from_user(
    ctx: click.Context, role: str, names: tuple[str, ...], sas: tuple[str, ...]
) -> None:
    """Remove users (or service accounts) from every binding of ROLE in the namespace."""
    sess = session(ctx)
    subjects = _subjects("User", names, sas, sess.namespace)
    path = f"/apis/{RBAC}/v1/namespaces/{sess.namespace}/rolebindings"
    with sess.client() as client:
        bindings = [
            b
            for b in _bindings(client, sess.namespace)
            if b.get("roleRef", {}).get("name") == role
            and any(_same(s, x) for s in b.get("subjects") or [] for x in subjects)
        ]
        if not bindings:
            # oc's answer too: a mistyped role or subject must not read as success.
            raise CliError(
                f'no role binding of "{role}" in namespace "{sess.namespace}" names'
                f" {', '.join(names + sas)} — check the role, the subject and -n"
            )
        for binding in bindings:
            kept = [
                s for s in binding.get("subjects") or [] if not any(_same(s, x) for x in subjects)
            ]
            url = f"{path}/{binding['metadata']['name']}"
            binding["subjects"] = kept
            response = client.delete(url) if not kept else client.put(url, json=binding)
            if response.status_code >= 400:
                raise from_response(response)
    names_text = ", ".join(f'"{name}"' for name in names + sas)
    click.echo(f"clusterrole.{RBAC}/{role} removed: {names_text}")
