"""PyYAML, as every meshgen module imports it: with its reader's pattern already compiled.

``import yaml`` (which libyaml's binding, ``yaml._yaml``, does too) runs yaml.reader, whose
pure-Python reader compiles a class of the characters YAML does not allow, written as the
complement of the allowed ranges up to U+10FFFF. Python's regex compiler fills its table for
those ranges one code point at a time: ~57 M instructions, a fifth of a ``meshgen validate``'s
(~10 ms of its CPU time here). meshgen reads YAML with libyaml, which checks characters
itself. The same class written as the disallowed ranges compiles in ~4.5 M instructions, so it
is put in :mod:`re`'s cache under PyYAML's text before yaml is imported, and yaml.reader takes
it from there. tests/unit/test_pyyaml.py holds the two to the same matches on every code point;
tests/unit/test_cli.py fails when a validate's yaml.reader compiled its own (a PyYAML or Python
whose text or cache differs: the cost comes back, nothing breaks). Import PyYAML's names from
here, never ``yaml`` first.
"""

import re

PYYAML_NON_PRINTABLE = "[^\x09\x0a\x0d\x20-\x7e\x85\xa0-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]"
"""yaml.reader.Reader.NON_PRINTABLE's text (PyYAML 6.0.4)."""
NON_PRINTABLE = "[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x84\x86-\x9f\ud800-\udfff\ufffe\uffff]"
"""The same class: C0 controls but tab, line feed and carriage return; DEL and C1 controls
but next-line; surrogates; U+FFFE and U+FFFF."""

_cache = vars(re).get("_cache")  # re.compile's cache: (type, text, flags) -> pattern
if isinstance(_cache, dict):
    _cache[str, PYYAML_NON_PRINTABLE, 0] = re.compile(NON_PRINTABLE)

import yaml  # noqa: E402  (after the cache entry above, which is the point)
from yaml._yaml import CParser  # noqa: E402
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode  # noqa: E402

__all__ = ["CParser", "MappingNode", "Node", "ScalarNode", "SequenceNode", "yaml"]
