"""Scrubbing paths of the server's disk out of text that goes to clients.

Error messages and failed jobs' messages are written for a person, and the engine's often name files. A client of
a server must not learn the server's folders (nor, through them, which files exist), so before any text leaves
the server the known folders (job store, models, the worker's folder) become short labels and any other absolute
path becomes ``<server path>``.
"""

from __future__ import annotations

import re

_ABSOLUTE = re.compile(r"(?<![\w.:/>])/(?:[^\s/'\"<>]+/)+[^\s/'\"<>,;)]*")
_HOME = re.compile(r"(?<![\w.])~/[^\s'\"<>,;)]*")


class Redactor:
    def __init__(self, known: dict[str, str] | None = None):
        # longest first, so a folder inside another is replaced by its own label
        self.known = sorted((known or {}).items(), key=lambda item: -len(item[0]))

    def add(self, path: str, label: str) -> None:
        self.known = sorted([*self.known, (str(path), label)], key=lambda item: -len(item[0]))

    def __call__(self, text: str) -> str:
        for path, label in self.known:
            if path and path in text:
                text = text.replace(path, label)
        text = _ABSOLUTE.sub("<server path>", text)
        return _HOME.sub("<server path>", text)


__all__ = ["Redactor"]
