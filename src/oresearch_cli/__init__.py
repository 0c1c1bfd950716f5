"""ores: O-Researcher style deep-research agents from open LLMs."""

__version__ = "0.1.0"
