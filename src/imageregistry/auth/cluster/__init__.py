"""Cluster mode (`auth_mode: kubernetes`): the cluster's identities and RBAC decide.

`kubeconfig` finds the cluster and the registry's own credentials for it, `client` posts
review objects to it, `cache` remembers answers for a bounded time, `authenticator`
turns bearer tokens into users by `TokenReview` and `authorizer` decides by
`SubjectAccessReview` (docs/operations.md, "Running in a cluster").
"""
