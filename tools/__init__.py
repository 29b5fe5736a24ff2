"""Entry scripts (installed as the octtl_tools package for the console scripts)."""
