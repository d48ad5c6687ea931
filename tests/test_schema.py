"""The EDM is the single source of truth: the migrated store matches the tables derived from it, on both stores."""

from __future__ import annotations

from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from lxml import etree

from odata_sync.edm import metadata_xml
from odata_sync.edm.model import default_model
from odata_sync.store.migrate import current_revision, head_revision, newest_file_revision, up_to_date


async def test_migrations_match_the_edm(runtime):
    store = runtime.store
    assert await current_revision(store) == head_revision() == newest_file_revision()
    assert await up_to_date(store)

    def diff(connection):
        context = MigrationContext.configure(connection, opts={"compare_type": True})
        return compare_metadata(context, store.metadata)

    async with store.engine.connect() as conn:
        differences = await conn.run_sync(diff)
    assert differences == [], differences


def test_metadata_is_plain_csdl():
    model = default_model()
    root = etree.fromstring(metadata_xml(model))
    assert root.get("Version") == "4.0"
    assert b"Store." not in metadata_xml(model)
    schema = root.find(".//{http://docs.oasis-open.org/odata/ns/edm}Schema")
    assert schema.get("Namespace") == "CData"


def test_model_resolves_every_reference():
    model = default_model()
    for es in model.entity_sets.values():
        for nav_name, target in es.bindings.items():
            assert model.entity_sets[target].entity_type.name == es.entity_type.navigations[nav_name].target
    for action in model.actions.values():
        assert action.return_type in model.complex_types
