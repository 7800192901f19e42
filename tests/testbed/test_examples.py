"""The examples of README.md and docs/reference.md that need root, run as they are written.

tests/doc_examples.py finds them (a `<!-- example: root -->` marker, or an sh block that says `sudo`)
and runs each in a scratch copy of the project's layout; the ones without root run in
tests/unit/test_reference.py.
"""

from __future__ import annotations

import pytest

from .. import doc_examples


@pytest.mark.parametrize("example", doc_examples.runnable(root=True), ids=lambda ex: ex.id)
def test_example_runs(example, root, tmp_path):
    doc_examples.run(example, tmp_path)
