"""The EDM: ``schema/CData.xml`` loaded into an in-memory model, and the CSDL written back for ``$metadata``."""

from odata_sync.edm.csdl import metadata_xml
from odata_sync.edm.model import (
    Action,
    ComplexType,
    EntitySet,
    EntityType,
    Model,
    NavigationProperty,
    Property,
    load_model,
)

__all__ = ["Action", "ComplexType", "EntitySet", "EntityType", "Model", "NavigationProperty", "Property",
           "load_model", "metadata_xml"]
