"""The Celery app object, importable by orchestration/ (to send) and workers/ (to run).

Creating it connects to nothing; configuration is read lazily from ``celeryconfig``.
"""

from __future__ import annotations

from pathlib import Path

from celery import Celery

app = Celery("baton")
app.config_from_object("celeryconfig")


@app.on_after_configure.connect
def _prepare_embedded_folders(sender: Celery, **_: object) -> None:
    """The filesystem broker and SQLite result store need their folders to exist."""
    options = sender.conf.broker_transport_options or {}
    for key in ("data_folder_in", "data_folder_out", "processed_folder", "control_folder"):
        if options.get(key):
            Path(options[key]).mkdir(parents=True, exist_ok=True)
    backend = sender.conf.result_backend or ""
    if backend.startswith("db+sqlite:///"):
        Path(backend.removeprefix("db+sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
