"""Loads the CSDL schema into plain dataclasses that every other layer reads (names matched case-insensitively)."""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cache
from pathlib import Path

from lxml import etree

EDM = "http://docs.oasis-open.org/odata/ns/edm"
EDMX = "http://docs.oasis-open.org/odata/ns/edmx"
NS = {"e": EDM, "edmx": EDMX}
SCHEMA_PATH = Path(__file__).resolve().parent.parent / "schema" / "CData.xml"

PRIMITIVES = {"Edm.String", "Edm.Int32", "Edm.Int64", "Edm.Boolean", "Edm.DateTimeOffset", "Edm.Guid", "Edm.Double",
              "Edm.Decimal"}


@dataclass
class Property:
    name: str
    type: str  # the element type: "Edm.String", "CData.QueryStatus", ...
    collection: bool = False
    nullable: bool = True
    default: object = None
    max_length: int | None = None
    computed: bool = False
    write_only: bool = False
    indexed: bool = False
    index_with: tuple[str, ...] = ()  # further columns of a composite index led by this property

    @property
    def type_name(self) -> str:
        return f"Collection({self.type})" if self.collection else self.type


@dataclass
class NavigationProperty:
    name: str
    target: str  # entity type name, unqualified
    collection: bool
    nullable: bool = True
    partner: str | None = None
    # (local property, target property) pairs that join the two types; resolved from either side's constraint
    join: list[tuple[str, str]] = field(default_factory=list)


@dataclass
class EntityType:
    name: str
    key: str
    properties: dict[str, Property]
    navigations: dict[str, NavigationProperty]
    _lower: dict[str, str] = field(default_factory=dict, repr=False)

    def __post_init__(self) -> None:
        self._lower = {n.lower(): n for n in (*self.properties, *self.navigations)}

    def canonical(self, name: str) -> str | None:
        """The declared spelling of a property or navigation name, or None."""
        return self._lower.get(name.lower())

    def prop(self, name: str) -> Property | None:
        canonical = self._lower.get(name.lower())
        return self.properties.get(canonical) if canonical else None

    def navigation(self, name: str) -> NavigationProperty | None:
        canonical = self._lower.get(name.lower())
        return self.navigations.get(canonical) if canonical else None

    @property
    def key_property(self) -> Property:
        return self.properties[self.key]


@dataclass
class ComplexType:
    name: str
    properties: dict[str, Property]


@dataclass
class EntitySet:
    name: str
    entity_type: EntityType
    bindings: dict[str, str]  # navigation name -> target entity set name
    insertable: bool = True
    updatable: bool = True
    deletable: bool = True
    concurrency: list[str] = field(default_factory=list)
    non_filterable: frozenset[str] = frozenset()  # Capabilities Filter/SortRestrictions: never filtered or sorted on


@dataclass
class Action:
    name: str
    parameters: dict[str, Property]
    return_type: str
    return_collection: bool

    def parameter(self, name: str) -> Property | None:
        for pname, param in self.parameters.items():
            if pname.lower() == name.lower():
                return param
        return None


@dataclass
class Model:
    namespace: str
    container: str
    entity_types: dict[str, EntityType]
    complex_types: dict[str, ComplexType]
    entity_sets: dict[str, EntitySet]
    actions: dict[str, Action]
    tree: etree._ElementTree = field(repr=False)
    _sets_lower: dict[str, str] = field(default_factory=dict, repr=False)
    _actions_lower: dict[str, str] = field(default_factory=dict, repr=False)

    def __post_init__(self) -> None:
        self._sets_lower = {n.lower(): n for n in self.entity_sets}
        self._actions_lower = {n.lower(): n for n in self.actions}

    def entity_set(self, name: str) -> EntitySet | None:
        canonical = self._sets_lower.get(name.lower())
        return self.entity_sets[canonical] if canonical else None

    def action(self, name: str) -> Action | None:
        canonical = self._actions_lower.get(name.lower())
        return self.actions[canonical] if canonical else None

    def set_of_type(self, type_name: str) -> EntitySet:
        for es in self.entity_sets.values():
            if es.entity_type.name == type_name:
                return es
        raise KeyError(type_name)

    def target_set(self, es: EntitySet, nav: NavigationProperty) -> EntitySet:
        return self.entity_sets[es.bindings[nav.name]]


def _parse_default(type_name: str, raw: str | None) -> object:
    if raw is None:
        return None
    if type_name == "Edm.Boolean":
        return raw.lower() == "true"
    if type_name in ("Edm.Int32", "Edm.Int64"):
        return int(raw)
    return raw


def _unqualify(namespace: str, name: str) -> str:
    return name[len(namespace) + 1:] if name.startswith(namespace + ".") else name


def _term(el: etree._Element, term: str) -> etree._Element | None:
    return el.find(f"e:Annotation[@Term='{term}']", NS)


def _property(el: etree._Element, namespace: str) -> Property:
    raw_type = el.get("Type")
    collection = raw_type.startswith("Collection(")
    element_type = raw_type[len("Collection("):-1] if collection else raw_type
    element_type = element_type if element_type.startswith("Edm.") else _unqualify(namespace, element_type)
    computed = _term(el, "Core.Computed")
    permissions = _term(el, "Core.Permissions")
    indexed = _term(el, "Store.Indexed")
    max_length = el.get("MaxLength")
    return Property(
        name=el.get("Name"), type=element_type, collection=collection,
        nullable=el.get("Nullable", "true") == "true",
        default=_parse_default(element_type, el.get("DefaultValue")),
        max_length=int(max_length) if max_length and max_length.isdigit() else None,
        computed=computed is not None and computed.get("Bool", "true") == "true",
        write_only=permissions is not None and permissions.get("EnumMember", "").endswith("/Write"),
        indexed=indexed is not None,
        index_with=tuple(c.strip() for c in (indexed.get("String") or "").split(",") if c.strip())
        if indexed is not None else (),
    )


def _bool_record(block: etree._Element | None, term: str, prop: str, default: bool = True) -> bool:
    if block is None:
        return default
    el = block.find(f"e:Annotation[@Term='{term}']/e:Record/e:PropertyValue[@Property='{prop}']", NS)
    return default if el is None else el.get("Bool", "true") == "true"


def load_model(path: Path | str = SCHEMA_PATH) -> Model:
    """Parse the CSDL file and resolve every cross reference (types, partners, bindings); raises on a broken schema."""
    tree = etree.parse(str(path))
    schema = tree.find(".//e:Schema", NS)
    namespace = schema.get("Namespace")
    container_el = schema.find("e:EntityContainer", NS)

    complex_types = {
        el.get("Name"): ComplexType(el.get("Name"), {p.get("Name"): _property(p, namespace)
                                                      for p in el.findall("e:Property", NS)})
        for el in schema.findall("e:ComplexType", NS)
    }
    entity_types: dict[str, EntityType] = {}
    for el in schema.findall("e:EntityType", NS):
        props = {p.get("Name"): _property(p, namespace) for p in el.findall("e:Property", NS)}
        navs = {}
        for n in el.findall("e:NavigationProperty", NS):
            raw = n.get("Type")
            collection = raw.startswith("Collection(")
            target = _unqualify(namespace, raw[len("Collection("):-1] if collection else raw)
            navs[n.get("Name")] = NavigationProperty(
                name=n.get("Name"), target=target, collection=collection, nullable=n.get("Nullable", "true") == "true",
                partner=n.get("Partner"),
                join=[(rc.get("Property"), rc.get("ReferencedProperty")) for rc in n.findall("e:ReferentialConstraint", NS)])
        key = el.find("e:Key/e:PropertyRef", NS).get("Name")
        entity_types[el.get("Name")] = EntityType(el.get("Name"), key, props, navs)

    for et in entity_types.values():
        for nav in et.navigations.values():
            target = entity_types[nav.target]
            if not nav.join and nav.partner:
                partner = target.navigations[nav.partner]
                nav.join = [(ref, local) for local, ref in partner.join]
            if not nav.join:
                raise ValueError(f"navigation {et.name}/{nav.name} has no referential constraint on either side")
            for local, remote in nav.join:
                if local not in et.properties or remote not in target.properties:
                    raise ValueError(f"navigation {et.name}/{nav.name} joins unknown properties {local}={remote}")

    entity_sets: dict[str, EntitySet] = {}
    for el in container_el.findall("e:EntitySet", NS):
        name = el.get("Name")
        et = entity_types[_unqualify(namespace, el.get("EntityType"))]
        block = schema.find(f"e:Annotations[@Target='{namespace}.{container_el.get('Name')}/{name}']", NS)
        concurrency_el = None if block is None else _term(block, "Core.OptimisticConcurrency")
        concurrency = [] if concurrency_el is None else [p.text for p in concurrency_el.iter(f"{{{EDM}}}PropertyPath")]
        entity_sets[name] = EntitySet(
            name=name, entity_type=et,
            bindings={b.get("Path"): b.get("Target") for b in el.findall("e:NavigationPropertyBinding", NS)},
            insertable=_bool_record(block, "Capabilities.InsertRestrictions", "Insertable"),
            updatable=_bool_record(block, "Capabilities.UpdateRestrictions", "Updatable"),
            deletable=_bool_record(block, "Capabilities.DeleteRestrictions", "Deletable"),
            concurrency=concurrency or [et.key],
            non_filterable=frozenset(
                p.text for p in ([] if block is None else block.findall(
                    ".//e:PropertyValue[@Property='NonFilterableProperties']//e:PropertyPath", NS))
            ) | frozenset(
                p.text for p in ([] if block is None else block.findall(
                    ".//e:PropertyValue[@Property='NonSortableProperties']//e:PropertyPath", NS))),
        )
    for es in entity_sets.values():
        for nav_name, target in es.bindings.items():
            if nav_name not in es.entity_type.navigations or target not in entity_sets:
                raise ValueError(f"bad NavigationPropertyBinding {es.name}/{nav_name} -> {target}")

    actions = {}
    for el in schema.findall("e:Action", NS):
        ret = el.find("e:ReturnType", NS).get("Type")
        collection = ret.startswith("Collection(")
        actions[el.get("Name")] = Action(
            name=el.get("Name"),
            parameters={p.get("Name"): _property(p, namespace) for p in el.findall("e:Parameter", NS)},
            return_type=_unqualify(namespace, ret[len("Collection("):-1] if collection else ret),
            return_collection=collection)
    for imp in container_el.findall("e:ActionImport", NS):
        if _unqualify(namespace, imp.get("Action")) not in actions:
            raise ValueError(f"ActionImport {imp.get('Name')} names an unknown action")
    return Model(namespace, container_el.get("Name"), entity_types, complex_types, entity_sets, actions, tree)


@cache
def default_model() -> Model:
    return load_model()
