"""The knowledge base: YAML gene tables, guidelines, CDS rules and hook definitions.

`load_knowledge(root)` reads, validates and cross-links everything under a root directory and
returns a `KnowledgeBase`, or raises `KnowledgeError` listing every fault with its file and line.
"""
