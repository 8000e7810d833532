"""oci package."""
