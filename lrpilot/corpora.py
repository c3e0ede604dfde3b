"""Offline corpora read from the operating system's own files (Debian and most Linux systems
ship them): prose, markup, data and many natural languages, with character statistics unlike
the Python-built corpora. None is Shakespeare, Wikipedia or non-Python source code, so they
may be collected from. A machine without a corpus's files gets a DatasetError naming them.

* `licenses`: the license texts of /usr/share/common-licenses (English legal prose).
* `gettext_catalogs`: the translated messages (msgstr) of the programs' gettext catalogs in
  /usr/share/locale for 20 European languages (Latin, Greek and Cyrillic scripts), at most
  250,000 characters per language.
* `mime_xml`: the freedesktop.org shared MIME database (XML markup), without the lines in
  scripts beyond U+052F (which would multiply the vocabulary).
* `iso_codes_json`: the iso-codes JSON tables (countries, languages, currencies, scripts).
"""

from __future__ import annotations

import gettext
import glob
import os
from pathlib import Path

LANGUAGES = ("de", "fr", "es", "it", "pt", "nl", "pl", "cs", "sv", "fi", "hu", "ro", "tr", "ru", "uk", "el", "da",
             "nb", "sk", "hr")
PER_LANGUAGE = 250_000
MIME_XML = "/usr/share/mime/packages/freedesktop.org.xml"
SOURCES = {
    "licenses": "/usr/share/common-licenses/*",
    "gettext_catalogs": "/usr/share/locale/{de,fr,...}/LC_MESSAGES/*.mo",
    "mime_xml": MIME_XML,
    "iso_codes_json": "/usr/share/iso-codes/json/iso_*.json",
}
NAMES = tuple(SOURCES)


class MissingCorpus(FileNotFoundError):
    pass


def _files(pattern: str) -> list[str]:
    files = sorted({os.path.realpath(f) for f in glob.glob(pattern)})
    return [f for f in files if os.path.isfile(f)]


def _read(paths: list[str]) -> str:
    return "\n".join(Path(f).read_text(encoding="utf-8", errors="replace") for f in paths)


def _gettext() -> str:
    parts = []
    for lang in LANGUAGES:
        n = 0
        for f in sorted(glob.glob(f"/usr/share/locale/{lang}/LC_MESSAGES/*.mo")):
            try:
                with open(f, "rb") as fh:
                    catalog = gettext.GNUTranslations(fh)._catalog
            except Exception:  # a catalog in a legacy encoding or corrupt: skipped
                continue
            for key in sorted(catalog, key=str):
                msg = catalog[key]
                if key != "" and isinstance(msg, str) and msg.strip() and n < PER_LANGUAGE:
                    parts.append(msg)
                    n += len(msg) + 1
    return "\n".join(parts)


def present(name: str) -> bool:
    """Whether this machine has the corpus's files (cheap: no file is read)."""
    if name == "gettext_catalogs":
        return any(glob.glob(f"/usr/share/locale/{lang}/LC_MESSAGES/*.mo") for lang in LANGUAGES)
    return bool(_files(SOURCES[name]))


def text(name: str) -> str:
    """The corpus's text; MissingCorpus when this machine lacks its files."""
    if name not in SOURCES:
        raise KeyError(name)
    if name == "gettext_catalogs":
        out = _gettext()
    elif name == "mime_xml":
        lines = Path(MIME_XML).read_text(encoding="utf-8").splitlines() if os.path.isfile(MIME_XML) else []
        out = "\n".join(ln for ln in lines if all(ord(c) <= 0x052F for c in ln))
    else:
        out = _read(_files(SOURCES[name]))
    if len(out) < 100_000:
        raise MissingCorpus(f"{name}: this machine lacks its files ({SOURCES[name]}: {len(out)} characters found, "
                            f"at least 100,000 needed); choose another corpus or use file:PATH")
    return out
