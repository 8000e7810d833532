"""Strategic merge patch: merge-keyed lists of the built-in kinds, sets, and directives."""

from __future__ import annotations

from imageregistry.apiserver.patch import strategic_merge_patch


def test_service_account_secrets_merge_by_name_in_the_given_order() -> None:
    target = {"secrets": [{"name": "a"}, {"name": "b"}], "imagePullSecrets": [{"name": "p"}]}
    patch = {
        "$setElementOrder/secrets": [{"name": "c"}, {"name": "a"}, {"name": "b"}],
        "secrets": [{"name": "c"}],
        "imagePullSecrets": [{"name": "q"}],  # atomic upstream: replaced
    }
    assert strategic_merge_patch(target, patch) == {
        "secrets": [{"name": "c"}, {"name": "a"}, {"name": "b"}],
        "imagePullSecrets": [{"name": "q"}],
    }


def test_merge_keyed_delete_and_update_of_one_element() -> None:
    target = {
        "metadata": {
            "ownerReferences": [
                {"uid": "1", "kind": "A", "name": "x"},
                {"uid": "2", "kind": "B", "name": "y"},
            ]
        }
    }
    patch = {
        "metadata": {
            "ownerReferences": [
                {"uid": "1", "$patch": "delete"},
                {"uid": "2", "name": "renamed"},
            ]
        }
    }
    assert strategic_merge_patch(target, patch) == {
        "metadata": {"ownerReferences": [{"uid": "2", "kind": "B", "name": "renamed"}]}
    }


def test_finalizers_merge_as_a_set() -> None:
    target = {"metadata": {"finalizers": ["a", "b"]}}
    assert strategic_merge_patch(target, {"metadata": {"finalizers": ["c", "a"]}}) == {
        "metadata": {"finalizers": ["a", "b", "c"]}
    }
    removed = {"metadata": {"$deleteFromPrimitiveList/finalizers": ["a"]}}
    assert strategic_merge_patch(target, removed) == {"metadata": {"finalizers": ["b"]}}


def test_rbac_lists_stay_atomic_and_patch_directives_apply() -> None:
    target = {
        "subjects": [{"kind": "User", "name": "alice"}, {"kind": "User", "name": "carol"}],
        "metadata": {"labels": {"a": "1"}, "annotations": {"x": "y"}},
    }
    patch = {
        "subjects": [{"kind": "User", "name": "bob"}],
        "metadata": {
            "labels": {"$patch": "replace", "b": "2"},
            "annotations": {"$patch": "delete"},
        },
    }
    assert strategic_merge_patch(target, patch) == {
        "subjects": [{"kind": "User", "name": "bob"}],
        "metadata": {"labels": {"b": "2"}},
    }
