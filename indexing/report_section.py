"""Indexing's part of the run report: vectors per model and kind, and a warning for an untrained model.

`embeddings_section(tables)` takes the report's `RunTables` (workflows/report.py: plain rows, read
once) and returns the context of templates/report_section.html.j2, or None when the run has no
embeddings.
"""

from __future__ import annotations

from collections import Counter

from curation.core import schema
from curation.core.models import is_untrained

E = schema.EMB


def embeddings_section(tables) -> dict | None:
    if tables.embeddings is None:
        return None
    counts = Counter((r[E.kind], r[E.model]) for r in tables.embeddings)
    return {"rows": [{"kind": kind, "model": model, "vectors": n}
                     for (kind, model), n in sorted(counts.items(), key=lambda kv: (str(kv[0][0]), str(kv[0][1])))],
            "untrained": any(is_untrained(model) for _, model in counts)}
