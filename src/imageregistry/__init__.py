"""Registry v2: an OCI image registry with a Kubernetes-style image API."""
