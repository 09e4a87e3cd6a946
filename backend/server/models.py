"""The priors and generators a server offers; a client chooses among them by name, never by path.

``JobSpec.prior`` and ``JobSpec.generator`` are names. On the user's own machine (``dreamstill generate``) a name
may be a folder or a file; a *server* must not let a client make its worker open any path on the server's disk
(loading a checkpoint runs its code paths, and the different errors tell which files exist). So the server maps
names to what it offers:

- always: the built-in prior ``builtin``, the test priors ``tiny`` / ``tiny:<seed>``, the built-in generator
  ``builtin``;
- ``dreamstill serve --prior NAME=PATH`` / ``--generator NAME=PATH``, repeatable;
- a models folder (``--models DIR``, default ``$DREAMSTILL_HOME/models`` when it exists):
  ``DIR/priors/<name>/`` (a diffusers folder) and ``DIR/generators/<name>/`` or ``DIR/generators/<name>.pt``;
- Hugging Face hub ids (``owner/name``) as priors only with ``--allow-hub``; the worker runs in an empty folder,
  so such a name can never be read as a relative path.

``ping`` lists the offer; a submit naming anything else is refused with the list.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path

_HUB_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,95}/[A-Za-z0-9][A-Za-z0-9_.-]{0,95}$")
_TINY = re.compile(r"^tiny(:\d{1,9})?$")
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.:-]{0,63}$")
BUILTIN_PRIORS = ("builtin", "tiny")
BUILTIN_GENERATORS = ("builtin", "builtin-density")  # generators.instant.BUILTIN_GENERATORS


class ModelRefused(ValueError):
    """The spec names a prior or generator this server does not offer; the message lists what it offers."""


def default_models_dir() -> Path:
    return Path(os.environ.get("DREAMSTILL_HOME", "~/.dreamstill")).expanduser() / "models"


def parse_named_path(text: str) -> tuple[str, str]:
    """``NAME=PATH`` -> (name, absolute path); ValueError naming what to change."""
    name, sep, path = text.partition("=")
    name = name.strip()
    if not sep or not _NAME.match(name) or not path.strip():
        raise ValueError(
            f"{text!r}: write NAME=PATH, e.g. sd15=/models/stable-diffusion-v1-5 (NAME: letters, digits, _.-:)"
        )
    return name, str(Path(path.strip()).expanduser().resolve())


@dataclass
class ModelCatalog:
    priors: dict[str, str] = field(default_factory=dict)  # name -> absolute path
    generators: dict[str, str] = field(default_factory=dict)
    allow_hub: bool = False

    @classmethod
    def build(
        cls, priors: dict, generators: dict, allow_hub: bool = False, models_dir: Path | None = None
    ) -> ModelCatalog:
        catalog = cls(allow_hub=allow_hub)
        if models_dir is not None and Path(models_dir).is_dir():
            catalog.scan(Path(models_dir))
        catalog.priors.update({k: str(Path(v).expanduser().resolve()) for k, v in priors.items()})
        catalog.generators.update({k: str(Path(v).expanduser().resolve()) for k, v in generators.items()})
        for kind, table in (("prior", catalog.priors), ("generator", catalog.generators)):
            for name, path in table.items():
                if not _NAME.match(name):
                    raise ValueError(f"{kind} name {name!r}: use letters, digits and _.-: (at most 64)")
                if not Path(path).exists():
                    raise ValueError(f"{kind} {name!r}: {path} does not exist; pass an existing folder or file")
        return catalog

    def scan(self, folder: Path) -> None:
        """Add ``folder/priors/<name>/`` and ``folder/generators/<name>[/|.pt]``."""
        for path in sorted((folder / "priors").glob("*")):
            if path.is_dir() and _NAME.match(path.name):
                self.priors.setdefault(path.name, str(path.resolve()))
        for path in sorted((folder / "generators").glob("*")):
            name = path.stem if path.suffix == ".pt" else path.name
            if (path.is_dir() or path.suffix == ".pt") and _NAME.match(name):
                self.generators.setdefault(name, str(path.resolve()))

    def offers(self) -> dict:
        return {
            "priors": [*BUILTIN_PRIORS, "tiny:<seed>", *sorted(self.priors)],
            "generators": [*BUILTIN_GENERATORS, *sorted(self.generators)],
            "hub": self.allow_hub,
        }

    def resolve_prior(self, name: str) -> str:
        if name in self.priors:
            return self.priors[name]
        if name in BUILTIN_PRIORS or _TINY.match(name) or (self.allow_hub and _HUB_ID.match(name)):
            return name
        hub = "" if self.allow_hub else " (hub ids only on a server started with --allow-hub)"
        raise ModelRefused(
            f"JobSpec.prior: this server does not offer {name[:80]!r}; choose one of "
            f"{', '.join(self.offers()['priors'])}{hub}. Priors are chosen by name: the server's admin adds them "
            "with `dreamstill serve --prior NAME=PATH` or a models folder"
        )

    def resolve_generator(self, name: str) -> str:
        if name in self.generators:
            return self.generators[name]
        if name in BUILTIN_GENERATORS:
            return name
        raise ModelRefused(
            f"JobSpec.generator: this server does not offer {name[:80]!r}; choose one of "
            f"{', '.join(self.offers()['generators'])}. Generators are chosen by name: the server's admin adds them "
            "with `dreamstill serve --generator NAME=PATH` or a models folder"
        )

    def resolve(self, spec_dict: dict) -> dict:
        """The spec as the worker should run it: prior and generator names replaced by what they stand for."""
        out = dict(spec_dict)
        out["prior"] = self.resolve_prior(str(spec_dict.get("prior", "builtin")))
        out["generator"] = self.resolve_generator(str(spec_dict.get("generator", "builtin")))
        return out

    def known_paths(self) -> dict[str, str]:
        """{absolute path: the name to show instead} for scrubbing messages."""
        return {
            **{path: f"prior {name!r}" for name, path in self.priors.items()},
            **{path: f"generator {name!r}" for name, path in self.generators.items()},
        }


__all__ = ["ModelCatalog", "ModelRefused", "default_models_dir", "parse_named_path"]
