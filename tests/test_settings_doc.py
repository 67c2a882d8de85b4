"""The settings documentation generator, ``scripts/gen_settings_doc.py``: pure unit tests
of how it shortens a help text to the README table's one sentence."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parent.parent / "scripts" / "gen_settings_doc.py"


def _load_script():
    spec = importlib.util.spec_from_file_location("gen_settings_doc", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


gen = _load_script()


@pytest.mark.parametrize(
    ("text", "first"),
    [
        ("One. Two.", "One."),
        ("Only one.", "Only one."),
        ("No full stop", "No full stop"),
        # A period inside a word or a path is no sentence end.
        ("Load `path/to/file.py` first. Then serve.", "Load `path/to/file.py` first."),
        # "e.g." does not end a sentence, in parentheses or not (the --uds-permissions row).
        (
            "The mode, in octal (e.g. `660` so that only the group can connect). Default is none.",
            "The mode, in octal (e.g. `660` so that only the group can connect).",
        ),
        ("A list, e.g. `a` or `b`, of names. More.", "A list, e.g. `a` or `b`, of names."),
        ("Use it, i.e. always. More.", "Use it, i.e. always."),
        # A whole sentence in parentheses belongs to the sentence around it.
        (
            "Serve fd N (systemd sockets. Found alone.) instead. More.",
            "Serve fd N (systemd sockets. Found alone.) instead.",
        ),
    ],
)
def test_first_sentence(text, first):
    assert gen.first_sentence(text) == first


def test_every_readme_row_is_a_whole_sentence():
    for info in gen.schema():
        sentence = gen.first_sentence(info.help)
        assert sentence.endswith((".", ".)")), (info.name, sentence)
        assert sentence.count("(") == sentence.count(")"), (info.name, sentence)
