"""Clientela: rule-engine and campaign workflow service for CRM marketing."""

from pathlib import Path

#: The repository root: templates, rule files and campaign specs are read from here.
ROOT = Path(__file__).resolve().parent.parent

__version__ = "0.1.0"
