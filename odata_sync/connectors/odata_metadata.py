"""Read an OData 4.0 ``$metadata`` document (CSDL XML) into what a source needs: entity sets, their columns and keys."""

from __future__ import annotations

from dataclasses import dataclass, field

from lxml import etree

from odata_sync.errors import ConnectionFailed

from .types import CanonicalType, edm_to_canonical

EDMX = "http://docs.oasis-open.org/odata/ns/edmx"
EDM = "http://docs.oasis-open.org/odata/ns/edm"


@dataclass(frozen=True)
class Property:
    name: str
    edm_type: str
    canonical: CanonicalType
    nullable: bool = True


@dataclass
class EntitySet:
    name: str
    properties: list[Property] = field(default_factory=list)
    keys: list[str] = field(default_factory=list)

    def property(self, name: str) -> Property | None:
        exact = next((p for p in self.properties if p.name == name), None)
        return exact or next((p for p in self.properties if p.name.lower() == name.lower()), None)


def _int(text: str | None) -> int | None:
    return int(text) if text and text.isdigit() else None


def parse_metadata(document: bytes) -> dict[str, EntitySet]:
    """Entity sets by name; ConnectionFailed when the document is not OData 4.0 CSDL."""
    try:
        root = etree.fromstring(document, parser=etree.XMLParser(resolve_entities=False, no_network=True,
                                                                  huge_tree=True))
    except etree.XMLSyntaxError as exc:
        raise ConnectionFailed(f"OData: $metadata is not XML ({exc})") from None
    if root.tag != f"{{{EDMX}}}Edmx":
        raise ConnectionFailed(f"OData: $metadata is not an OData 4.0 CSDL document (root element {root.tag})")

    types: dict[str, etree._Element] = {}
    enums: set[str] = set()
    definitions: dict[str, str] = {}
    aliases: dict[str, str] = {}
    for schema in root.iter(f"{{{EDM}}}Schema"):
        namespace = schema.get("Namespace", "")
        if schema.get("Alias"):
            aliases[schema.get("Alias")] = namespace
        for element in schema:
            name = f"{namespace}.{element.get('Name')}"
            if element.tag in (f"{{{EDM}}}EntityType", f"{{{EDM}}}ComplexType"):
                types[name] = element
            elif element.tag == f"{{{EDM}}}EnumType":
                enums.add(name)
            elif element.tag == f"{{{EDM}}}TypeDefinition":
                definitions[name] = element.get("UnderlyingType", "Edm.String")

    def qualified(name: str) -> str:
        prefix, _, rest = name.rpartition(".")
        return f"{aliases[prefix]}.{rest}" if prefix in aliases else name

    def canonical(element: etree._Element) -> tuple[str, CanonicalType]:
        edm = qualified(element.get("Type", "Edm.String"))
        if edm in definitions:
            edm = definitions[edm]
        if edm in enums:
            return edm, CanonicalType("text")
        return edm, edm_to_canonical(edm, max_length=_int(element.get("MaxLength")),
                                     precision=_int(element.get("Precision")), scale=_int(element.get("Scale")))

    def describe(type_name: str, seen: frozenset[str] = frozenset()) -> tuple[list[Property], list[str]]:
        element = types.get(qualified(type_name))
        if element is None or type_name in seen:
            return [], []
        properties, keys = [], []
        if element.get("BaseType"):
            properties, keys = describe(element.get("BaseType"), seen | {type_name})
        for child in element:
            if child.tag == f"{{{EDM}}}Property":
                edm, ctype = canonical(child)
                properties.append(Property(child.get("Name"), edm, ctype, child.get("Nullable", "true") != "false"))
            elif child.tag == f"{{{EDM}}}Key":
                keys = [ref.get("Name") for ref in child.iter(f"{{{EDM}}}PropertyRef")]
        return properties, keys

    sets: dict[str, EntitySet] = {}
    for container in root.iter(f"{{{EDM}}}EntityContainer"):
        for entity_set in container.iter(f"{{{EDM}}}EntitySet"):
            properties, keys = describe(entity_set.get("EntityType", ""))
            sets[entity_set.get("Name")] = EntitySet(entity_set.get("Name"), properties, keys)
    return sets
