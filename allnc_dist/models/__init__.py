"""Backbones: a shared trunk plus a factory of independently initialised last-stage branches."""

from .backbone import Backbone, build_backbone

__all__ = ["Backbone", "build_backbone"]
