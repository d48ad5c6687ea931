"""Writes ``$metadata`` (CSDL XML) from the loaded schema, minus the private ``Store`` hints."""

from __future__ import annotations

import copy

from lxml import etree

from odata_sync.edm.model import NS, Model

PRIVATE_NAMESPACE = "OdataSync.Store.V1"


def metadata_xml(model: Model) -> bytes:
    """The CSDL document clients read; computed once at start and served as bytes."""
    tree = copy.deepcopy(model.tree)
    root = tree.getroot()
    for ref in root.findall("edmx:Reference", NS):
        if ref.find(f"edmx:Include[@Namespace='{PRIVATE_NAMESPACE}']", NS) is not None:
            root.remove(ref)
    for ann in list(root.iter(f"{{{NS['e']}}}Annotation")):
        if ann.get("Term", "").startswith("Store."):
            parent = ann.getparent()
            parent.remove(ann)
            if parent.tag.endswith("}Property") and len(parent) == 0:
                parent.text = None
    for comment in list(root.iter(etree.Comment)):
        comment.getparent().remove(comment)
    etree.indent(root, space="  ")
    return b'<?xml version="1.0" encoding="utf-8"?>\n' + etree.tostring(root, encoding="utf-8")
