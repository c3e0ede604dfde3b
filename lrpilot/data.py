"""Character-level datasets: the held-out test corpora, offline corpora, user files.

Every dataset is a `CharData`: train and val token arrays (uint16) and a vocabulary.

* `shakespeare_char`: tinyshakespeare, vocab 65, first 90% train, last 10% val.
* `enwik8`, `text8`: 100M bytes read as latin-1, vocab = the distinct bytes,
  90M train, 5M val, 5M test (the test split is kept but never trained on).
* offline corpora built from the running Python installation (no download):
  `python_docs` (the reference manual's topics), `python_docstrings` (docstrings
  of the standard library), `python_stdlib` (standard-library source code) and
  `unicode_names` (the Unicode character-name table without its algorithmic names);
  90/10 split. Their text
  depends on the Python version; `CharData.meta` records it with a SHA-256.
* offline corpora read from the system's own files (`lrpilot.corpora`): `licenses`,
  `gettext_catalogs`, `mime_xml`, `iso_codes_json`; 90/10 split, SHA-256 in `CharData.meta`.
* `file:PATH`: any text file (UTF-8, else latin-1), vocab built from it, 90/10 split.

Files are found through `LRPILOT_DATA_DIR` (`<dir>/<name>/<file>`), then the cache
directory (`LRPILOT_CACHE_DIR`, default `~/.cache/lrpilot`), then downloaded from
the canonical URL and checked.
"""

from __future__ import annotations

import ast
import dataclasses
import glob
import hashlib
import os
import re
import sys
import sysconfig
import unicodedata
import urllib.request
import zipfile
from pathlib import Path

import numpy as np

from lrpilot import corpora
from lrpilot.io import atomic_path

SHAKESPEARE_URL = "https://raw.githubusercontent.com/karpathy/char-rnn/master/data/tinyshakespeare/input.txt"
SHAKESPEARE_SHA256 = "86c4e6aa9db7c042ec79f339dcb96d42b0075e16b8fc2e86bf0ca57e2dc565ed"
ENWIK8_URL = "http://mattmahoney.net/dc/enwik8.zip"
TEXT8_URL = "http://mattmahoney.net/dc/text8.zip"
HUTTER_BYTES = 100_000_000
HUTTER_HELDOUT = 5_000_000

HELD_OUT_TASKS = ("shakespeare_char", "enwik8", "text8")
PYTHON_TASKS = ("python_docs", "python_docstrings", "python_stdlib", "unicode_names")
OFFLINE_TASKS = PYTHON_TASKS + corpora.NAMES  # the corpora collection may draw from, all built offline


def misplaced_tasks(tasks) -> tuple[list[str], list[str]]:
    """(held out, unknown) among `tasks`, for the stages that train on or choose by tasks: test
    tasks (never collected from nor chosen on) and names neither an offline corpus nor file:PATH.
    Each caller words its own refusal."""
    held = [t for t in tasks if t in HELD_OUT_TASKS]
    unknown = [t for t in tasks if t not in HELD_OUT_TASKS and t not in OFFLINE_TASKS and not t.startswith("file:")]
    return held, unknown


class DatasetError(RuntimeError):
    """A dataset file is missing, corrupt or unreadable; the message says how to fix it."""


@dataclasses.dataclass(frozen=True)
class CharData:
    name: str
    train: np.ndarray  # (N_train,) uint16 token ids
    val: np.ndarray  # (N_val,) uint16
    chars: tuple[str, ...]  # id -> character
    meta: dict = dataclasses.field(default_factory=dict)

    @property
    def vocab_size(self) -> int:
        return len(self.chars)

    def decode(self, ids) -> str:
        return "".join(self.chars[int(i)] for i in ids)


def data_dir() -> Path | None:
    d = os.environ.get("LRPILOT_DATA_DIR")
    return Path(d).expanduser() if d else None


def cache_dir() -> Path:
    return Path(os.environ.get("LRPILOT_CACHE_DIR", "~/.cache/lrpilot")).expanduser()


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _encode(text: str, chars: tuple[str, ...] | None = None) -> tuple[np.ndarray, tuple[str, ...]]:
    """Maps a string to uint16 ids over its sorted distinct characters."""
    codes = np.frombuffer(text.encode("utf-32-le"), dtype=np.uint32)
    uniq, ids = np.unique(codes, return_inverse=True)
    if len(uniq) > np.iinfo(np.uint16).max:
        raise DatasetError(f"{len(uniq)} distinct characters: more than a uint16 vocabulary holds")
    return ids.astype(np.uint16), tuple(chr(c) for c in uniq)


def _split_90_10(name: str, text: str, meta: dict) -> CharData:
    if len(text) < 100:
        raise DatasetError(f"{name}: only {len(text)} characters; a dataset needs at least 100")
    ids, chars = _encode(text)
    n = len(ids)
    cut = int(n * 0.9)
    return CharData(name, ids[:cut], ids[cut:], chars, meta)


def _download(url: str, dest: Path) -> None:
    with atomic_path(dest) as tmp:
        with urllib.request.urlopen(url, timeout=60) as r, open(tmp, "wb") as f:
            while block := r.read(1 << 20):
                f.write(block)


def _locate(name: str, filenames: tuple[str, ...], url: str, offline: bool) -> Path:
    """First existing `<LRPILOT_DATA_DIR>/<name>/<f>`, then the cache, else downloads `url`."""
    looked = []
    roots = [d for d in (data_dir(), cache_dir()) if d is not None]
    for root in roots:
        for fn in filenames:
            p = root / name / fn
            looked.append(str(p))
            if p.is_file():
                return p
    dest = cache_dir() / name / Path(url).name
    why = "offline mode (LRPILOT_OFFLINE=1)" if offline else None
    if not offline:
        try:
            _download(url, dest)
            return dest
        except Exception as e:  # network errors of all kinds
            why = f"download of {url} failed: {e}"
    hint = "LRPILOT_DATA_DIR is unset" if data_dir() is None else f"LRPILOT_DATA_DIR={data_dir()}"
    raise DatasetError(
        f"{name}: no data file found. Looked for {', '.join(looked)} ({hint}); {why}. "
        f"Download {url} and put it at <dir>/{name}/{Path(url).name}, then set LRPILOT_DATA_DIR=<dir>."
    )


def _offline() -> bool:
    return os.environ.get("LRPILOT_OFFLINE", "") not in ("", "0")


def load_shakespeare() -> CharData:
    path = _locate("shakespeare_char", ("input.txt",), SHAKESPEARE_URL, _offline())
    digest = sha256_file(path)
    if digest != SHAKESPEARE_SHA256:
        raise DatasetError(
            f"shakespeare_char: {path} has SHA-256 {digest}, expected {SHAKESPEARE_SHA256} "
            f"(the canonical tinyshakespeare, 1,115,394 bytes). Replace it with {SHAKESPEARE_URL}."
        )
    return _split_90_10("shakespeare_char", path.read_text(encoding="utf-8"), {"path": str(path), "sha256": digest})


def _read_hutter(name: str, url: str) -> tuple[bytes, Path]:
    path = _locate(name, (name, f"{name}.zip"), url, _offline())
    try:
        if path.suffix == ".zip":
            with zipfile.ZipFile(path) as z:
                if name not in z.namelist():
                    raise DatasetError(f"{name}: {path} holds {z.namelist()[:5]}, expected a member named '{name}'")
                raw = z.read(name)
        else:
            raw = path.read_bytes()
    except zipfile.BadZipFile as e:
        raise DatasetError(f"{name}: {path} is not a valid zip file ({e}); delete it and download {url} again") from None
    if len(raw) != HUTTER_BYTES:
        raise DatasetError(f"{name}: {path} holds {len(raw):,} bytes, expected {HUTTER_BYTES:,}; replace it with {url}")
    return raw, path


def load_hutter(name: str) -> CharData:
    """enwik8 or text8: latin-1 characters, 90M / 5M val / 5M test."""
    url = {"enwik8": ENWIK8_URL, "text8": TEXT8_URL}[name]
    raw, path = _read_hutter(name, url)
    codes = np.frombuffer(raw, dtype=np.uint8)
    present = np.bincount(codes, minlength=256) > 0
    if name == "text8" and not set(np.flatnonzero(present)) <= set(b" abcdefghijklmnopqrstuvwxyz"):
        raise DatasetError(f"text8: {path} contains bytes other than a-z and space; replace it with {url}")
    lut = np.cumsum(present).astype(np.uint16) - 1
    ids = lut[codes]
    chars = tuple(chr(b) for b in np.flatnonzero(present))  # latin-1: byte b is character chr(b)
    n_tr = HUTTER_BYTES - 2 * HUTTER_HELDOUT
    return CharData(name, ids[:n_tr], ids[n_tr : n_tr + HUTTER_HELDOUT], chars, {"path": str(path), "test": (n_tr + HUTTER_HELDOUT, HUTTER_BYTES)})


def _stdlib_files() -> list[Path]:
    root = Path(sysconfig.get_paths()["stdlib"])
    skip = {"site-packages", "dist-packages", "test", "tests", "idle_test", "lib2to3", "__pycache__"}
    files = [Path(f) for f in glob.glob(str(root / "**" / "*.py"), recursive=True)]
    return sorted(f for f in files if not skip & set(f.relative_to(root).parts[:-1]))


def _read_source(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except (UnicodeDecodeError, OSError):
        return ""


def _ascii(text: str) -> str:
    """Keeps printable ASCII, newline and tab; anything else becomes '?' (a small vocabulary)."""
    table = {c: "?" for c in set(text) if not (c in "\n\t" or " " <= c <= "~")}
    return text.translate(str.maketrans(table)) if table else text


def offline_corpus_text(name: str) -> str:
    """The text of one offline corpus, built from the running Python installation."""
    if name == "python_docs":
        import pydoc_data.topics as topics

        return "\n\n".join(topics.topics[k].strip() for k in sorted(topics.topics))
    if name == "unicode_names":
        # without the algorithmic names (CJK UNIFIED IDEOGRAPH-4E00, HANGUL SYLLABLE GA, ...): 77% of the table
        algorithmic = re.compile(r"-[0-9A-F]{4,6}$|^HANGUL SYLLABLE ")
        names = (unicodedata.name(chr(i), "") for i in range(sys.maxunicode + 1))
        return "\n".join(n for n in names if n and not algorithmic.search(n)) + "\n"
    if name == "python_stdlib":
        parts, total = [], 0
        for f in _stdlib_files():
            src = _read_source(f)
            parts.append(src)
            total += len(src)
            if total > 8_000_000:
                break
        return _ascii("\n".join(parts))
    if name in corpora.NAMES:
        try:
            return corpora.text(name)
        except corpora.MissingCorpus as e:
            raise DatasetError(str(e)) from None
    if name == "python_docstrings":
        docs = []
        for f in _stdlib_files():
            try:
                tree = ast.parse(_read_source(f))
            except (SyntaxError, ValueError):
                continue
            for node in ast.walk(tree):
                if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
                    d = ast.get_docstring(node)
                    if d and len(d) > 40:
                        docs.append(d)
        return _ascii("\n\n".join(docs))
    raise KeyError(name)


def _cached_offline_text(name: str) -> str:
    """offline_corpus_text, cached under the cache directory per Python and Unicode version."""
    if name in corpora.NAMES:  # system files: read afresh (they change with the system, not with Python)
        return offline_corpus_text(name)
    path = cache_dir() / "offline" / f"{name}-py{sys.version.split()[0]}-u{unicodedata.unidata_version}.txt"
    try:
        return path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError):
        pass
    text = offline_corpus_text(name)
    try:
        with atomic_path(path) as tmp:
            tmp.write_text(text, encoding="utf-8")
    except OSError:
        pass  # a read-only cache is not an error
    return text


def load_offline(name: str) -> CharData:
    text = _cached_offline_text(name)
    meta = {
        "python": sys.version.split()[0],
        "unicode": unicodedata.unidata_version,
        "sha256": hashlib.sha256(text.encode("utf-8")).hexdigest(),
    }
    return _split_90_10(name, text, meta)


def _read_text_file(path_str: str) -> tuple[str, str, bytes, Path]:
    """(text, encoding, raw bytes, path) of a user's text file; DatasetError naming it otherwise."""
    path = Path(path_str).expanduser()
    if path.is_dir():
        raise DatasetError(f"file:{path_str}: {path.resolve()} is a directory; give the path of a text file")
    if not path.is_file():
        raise DatasetError(f"file:{path_str}: no such file ({path.resolve()}); give the path of a text file")
    raw = path.read_bytes()
    try:
        text, enc = raw.decode("utf-8"), "utf-8"
    except UnicodeDecodeError:
        text, enc = raw.decode("latin-1"), "latin-1"
    sample = text[:100_000]
    control = sum(1 for c in sample if ord(c) < 32 and c not in "\n\r\t\f")
    if "\x00" in sample or control > 0.01 * max(len(sample), 1):
        raise DatasetError(f"file:{path_str}: looks binary ({control} control characters in its first "
                           f"{len(sample):,}); give a text file")
    if len(text) < 2000:
        raise DatasetError(f"file:{path_str}: {len(text)} characters; at least 2000 are needed for a 90/10 split")
    return text, enc, raw, path


def load_file(path_str: str) -> CharData:
    text, enc, raw, path = _read_text_file(path_str)
    return _split_90_10(f"file:{path_str}", text, {"path": str(path.resolve()), "encoding": enc, "sha256": hashlib.sha256(raw).hexdigest()})


def check_task(task: str) -> None:
    """Raises DatasetError (naming the task) unless `task` names a dataset: a known name, or
    file:PATH of a readable text file. Reads no dataset but a user's file."""
    if task in HELD_OUT_TASKS or task in OFFLINE_TASKS:
        return
    if task.startswith("file:"):
        _read_text_file(task[len("file:"):])
        return
    known = ", ".join(HELD_OUT_TASKS + OFFLINE_TASKS + ("file:PATH",))
    raise DatasetError(f"unknown task '{task}'; expected one of {known}")


_CACHE: dict[str, CharData] = {}


def load(task: str) -> CharData:
    """Loads a dataset by task name (`shakespeare_char`, `enwik8`, `text8`, offline names, `file:PATH`)."""
    if task not in _CACHE:
        if task == "shakespeare_char":
            ds = load_shakespeare()
        elif task in ("enwik8", "text8"):
            ds = load_hutter(task)
        elif task in OFFLINE_TASKS:
            ds = load_offline(task)
        elif task.startswith("file:"):
            ds = load_file(task[len("file:") :])
        else:
            check_task(task)  # raises: not a dataset name
        _CACHE[task] = ds
    return _CACHE[task]
