"""Declarative field mappings: load, validate and render mappings/*.yaml."""
