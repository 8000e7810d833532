from __future__ import annotations

import pytest

from imageregistry.auth.identity import (
    Attributes,
    UserInfo,
    anonymous,
    authenticated,
    parse_service_account,
    service_account,
    with_derived_groups,
)


def test_anonymous_is_unauthenticated() -> None:
    user = anonymous()
    assert user.username == "system:anonymous"
    assert user.groups == ("system:unauthenticated",)
    assert user.is_anonymous


def test_authenticated_user_gains_system_authenticated_once() -> None:
    user = authenticated("alice", ["devs", "system:authenticated", "devs"])
    assert user.groups == ("devs", "system:authenticated")


def test_service_account_groups_are_derived() -> None:
    user = service_account("app", "builder", uid="u-1")
    assert user.username == "system:serviceaccount:app:builder"
    assert user.uid == "u-1"
    assert user.groups == (
        "system:serviceaccounts",
        "system:serviceaccounts:app",
        "system:authenticated",
    )


def test_impersonated_service_account_gets_derived_groups() -> None:
    # kubectl --as=system:serviceaccount:app:builder sends no groups (docs/kubectl.md#auth-can-i).
    user = with_derived_groups(UserInfo("system:serviceaccount:app:builder"))
    assert "system:serviceaccounts:app" in user.groups
    assert "system:authenticated" in user.groups


def test_impersonating_into_unauthenticated_does_not_add_authenticated() -> None:
    user = with_derived_groups(UserInfo("bob", groups=("system:unauthenticated",)))
    assert user.groups == ("system:unauthenticated",)


def test_impersonating_anonymous_gets_unauthenticated() -> None:
    assert with_derived_groups(UserInfo("system:anonymous")).groups == ("system:unauthenticated",)


@pytest.mark.parametrize(
    ("username", "expected"),
    [
        ("system:serviceaccount:app:builder", ("app", "builder")),
        ("system:serviceaccount:app", None),
        ("system:serviceaccount::builder", None),
        ("system:serviceaccount:app:", None),
        ("system:serviceaccount:a:b:c", None),
        ("alice", None),
    ],
)
def test_parse_service_account(username: str, expected: tuple[str, str] | None) -> None:
    assert parse_service_account(username) == expected


def test_user_info_is_hashable_with_extra() -> None:
    user = authenticated("admin", extra={"scopes": ("registry:*",)})
    assert {user: 1}[user] == 1
    assert user.extra["scopes"] == ("registry:*",)


def test_attributes_combined_resource() -> None:
    attrs = Attributes.for_resource(
        anonymous(), "get", "image.alauda.io", "imagestreams", subresource="layers"
    )
    assert attrs.combined_resource == "imagestreams/layers"
    assert Attributes.for_path(anonymous(), "get", "/version").is_resource_request is False
