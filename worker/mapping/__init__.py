"""Declarative field mappings: load, validate and render mappings/*.yaml.

`load_mappings(dir, settings)` reads oracle.yaml, caliq.yaml and agents.csv once (errors name
`file:line`); the returned `Mappings` renders fitted payloads from a Genesys event.
"""

from worker.mapping.agents import Agent, Agents
from worker.mapping.errors import MappingError, PayloadError
from worker.mapping.render import Mappings, load_mappings

__all__ = ["Agent", "Agents", "MappingError", "Mappings", "PayloadError", "load_mappings"]
