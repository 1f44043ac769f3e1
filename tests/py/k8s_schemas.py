"""Offline Kubernetes schema validation shared by the manifest tests.

kubernetes-validate ships JSON schemas per Kubernetes minor version; wsdrain injects a
native sidecar (Kubernetes >= 1.29), so every output is checked, strictly, against
every version from 1.29 up that the installed package ships.
"""

import kubernetes_validate
from kubernetes_validate import utils

MIN_VERSION = (1, 29)


def versions():
    """Every Kubernetes version >= 1.29 the installed kubernetes-validate ships."""
    found = sorted(
        {v for v in utils.all_versions() if tuple(int(x) for x in v.split(".")[:2]) >= MIN_VERSION},
        key=lambda v: tuple(int(x) for x in v.split(".")),
    )
    assert found, "kubernetes-validate ships no schema for Kubernetes >= 1.29"
    return found


def objects(doc):
    """A document and, for a List, its items (a List has no schema of its own)."""
    if isinstance(doc, dict) and doc.get("kind", "").endswith("List") and "items" in doc:
        for item in doc["items"]:
            yield from objects(item)
    elif doc is not None:
        yield doc


def validate_strict(doc, where):
    """Validates one object against every version; raises with a clear message."""
    for version in versions():
        try:
            kubernetes_validate.validate(doc, version, strict=True)
        except kubernetes_validate.ValidationError as e:
            path = ".".join(str(p) for p in e.path)
            raise AssertionError(
                f"{where}: {doc.get('kind')} {doc.get('metadata', {}).get('name')} "
                f"is invalid for Kubernetes {version}: {path}: {e.message}"
            ) from None
