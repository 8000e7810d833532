"""The Kubernetes API group names the registry serves, checks or talks to, spelled once.

A leaf every layer may import (metadata keys resources by `plural.group`, auth writes
rules against groups, the API and `ac` build `apiVersion`s and paths from them), so a
group's spelling cannot drift between the code that writes a name and the code that reads
it. The wire contract itself is the tests' literal strings.
"""

IMAGE = "image.alauda.io"
IMAGE_V1 = f"{IMAGE}/v1"
IMAGE_API = f"/apis/{IMAGE_V1}"  # the path prefix of the image group's resources
OPERATOR = "imageregistry.operator.alauda.io"
RBAC = "rbac.authorization.k8s.io"
AUTHORIZATION = "authorization.k8s.io"
AUTHENTICATION = "authentication.k8s.io"
