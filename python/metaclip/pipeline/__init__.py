"""The curation pipeline (curation-spec §7): read → (LID) → match → count → balance →
sample → write subset + datacard + report. ``run.Engine`` is the embedded engine."""
