"""lrpilot.data: how datasets are found, checked and split, and the errors users see.

No network: every test that could download runs with LRPILOT_OFFLINE=1 and empty data and
cache directories; the Hutter-prize splits are checked on small synthetic files.
"""

from __future__ import annotations

import hashlib
import zipfile

import numpy as np
import pytest

from lrpilot import data


@pytest.fixture(autouse=True)
def isolated(tmp_path, monkeypatch):
    """Empty data and cache directories, offline, and a clean in-memory dataset cache."""
    d, c = tmp_path / "data", tmp_path / "cache"
    d.mkdir()
    c.mkdir()
    monkeypatch.setenv("LRPILOT_DATA_DIR", str(d))
    monkeypatch.setenv("LRPILOT_CACHE_DIR", str(c))
    monkeypatch.setenv("LRPILOT_OFFLINE", "1")
    monkeypatch.setattr(data, "_CACHE", {})
    return d, c


def _put(root, name, filename, content: bytes):
    p = root / name / filename
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_bytes(content)
    return p


# ---------------------------------------------------------------------------------------------
# shakespeare_char
# ---------------------------------------------------------------------------------------------
def test_missing_shakespeare_says_where_it_looked_and_what_to_do(isolated):
    d, c = isolated
    with pytest.raises(data.DatasetError) as e:
        data.load("shakespeare_char")
    msg = str(e.value)
    assert str(d / "shakespeare_char" / "input.txt") in msg
    assert str(c / "shakespeare_char" / "input.txt") in msg
    assert data.SHAKESPEARE_URL in msg and "LRPILOT_DATA_DIR" in msg
    assert "offline" in msg.lower()
    assert "shakespeare_char" not in data._CACHE


def test_missing_dataset_without_data_dir(isolated, monkeypatch):
    _, c = isolated
    monkeypatch.delenv("LRPILOT_DATA_DIR")
    with pytest.raises(data.DatasetError, match="LRPILOT_DATA_DIR is unset") as e:
        data.load("shakespeare_char")
    assert str(c / "shakespeare_char" / "input.txt") in str(e.value)


def test_corrupt_shakespeare_names_file_and_expected_sha(isolated):
    d, _ = isolated
    p = _put(d, "shakespeare_char", "input.txt", b"First Citizen:\nBefore we proceed any further, hear me speak.\n" * 100)
    with pytest.raises(data.DatasetError) as e:
        data.load("shakespeare_char")
    msg = str(e.value)
    assert str(p) in msg
    assert data.SHAKESPEARE_SHA256 in msg
    assert hashlib.sha256(p.read_bytes()).hexdigest() in msg


def test_cache_dir_is_searched_after_data_dir(isolated):
    """A file in the cache directory is found (and still checked) when the data directory lacks it."""
    _, c = isolated
    p = _put(c, "shakespeare_char", "input.txt", b"not shakespeare " * 200)
    with pytest.raises(data.DatasetError, match="SHA-256") as e:
        data.load("shakespeare_char")
    assert str(p) in str(e.value)


# ---------------------------------------------------------------------------------------------
# enwik8 / text8
# ---------------------------------------------------------------------------------------------
@pytest.fixture
def small_hutter(monkeypatch):
    """Hutter sizes shrunk to 1000 bytes: 900 train / 50 val / 50 test."""
    monkeypatch.setattr(data, "HUTTER_BYTES", 1000)
    monkeypatch.setattr(data, "HUTTER_HELDOUT", 50)


def _zip(path, member, content: bytes):
    path.parent.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(path, "w") as z:
        z.writestr(member, content)
    return path


@pytest.mark.parametrize("name", ["enwik8", "text8"])
def test_missing_hutter(isolated, name):
    d, _ = isolated
    with pytest.raises(data.DatasetError) as e:
        data.load(name)
    msg = str(e.value)
    assert str(d / name / name) in msg and str(d / name / f"{name}.zip") in msg
    assert f"http://mattmahoney.net/dc/{name}.zip" in msg


@pytest.mark.parametrize("name", ["enwik8", "text8"])
def test_zip_without_member(isolated, small_hutter, name):
    d, _ = isolated
    p = _zip(d / name / f"{name}.zip", "something_else", b"a" * 1000)
    with pytest.raises(data.DatasetError) as e:
        data.load(name)
    msg = str(e.value)
    assert str(p) in msg and f"'{name}'" in msg and "something_else" in msg


def test_bad_zip(isolated):
    d, _ = isolated
    p = _put(d, "enwik8", "enwik8.zip", b"this is not a zip archive")
    with pytest.raises(data.DatasetError, match="not a valid zip") as e:
        data.load("enwik8")
    assert str(p) in str(e.value)


@pytest.mark.parametrize("name", ["enwik8", "text8"])
def test_wrong_size(isolated, name):
    d, _ = isolated
    p = _put(d, name, name, b"abc def " * 100)
    with pytest.raises(data.DatasetError) as e:
        data.load(name)
    msg = str(e.value)
    assert str(p) in msg and "800" in msg and "100,000,000" in msg


def test_text8_rejects_foreign_bytes(isolated, small_hutter):
    d, _ = isolated
    raw = bytearray(b"the quick brown fox jumps over the lazy dog " * 30)[:1000]
    raw[500] = ord("Q")
    p = _put(d, "text8", "text8", bytes(raw))
    with pytest.raises(data.DatasetError, match="a-z and space") as e:
        data.load("text8")
    assert str(p) in str(e.value)


def _check_hutter_split(ds, raw: bytes):
    assert len(ds.train) == 900 and len(ds.val) == 50  # 90% / 5%; the last 5% (test) is never loaded
    assert ds.chars == tuple(chr(b) for b in sorted(set(raw)))  # vocab = the distinct bytes, latin-1
    assert ds.vocab_size == len(set(raw))
    assert ds.decode(ds.train) == raw[:900].decode("latin-1")
    assert ds.decode(ds.val) == raw[900:950].decode("latin-1")
    assert tuple(ds.meta["test"]) == (950, 1000)
    assert ds.train.dtype == np.uint16 and int(ds.train.max()) < ds.vocab_size


def test_enwik8_split_from_zip(isolated, small_hutter):
    d, _ = isolated
    rng = np.random.default_rng(0)
    raw = rng.choice(np.array([9, 10, 32, 60, 62, 97, 98, 99, 195, 169, 255], np.uint8), 1000).tobytes()
    _zip(d / "enwik8" / "enwik8.zip", "enwik8", raw)
    _check_hutter_split(data.load("enwik8"), raw)


def test_text8_split_from_raw_file(isolated, small_hutter):
    d, _ = isolated
    raw = (b"anarchism originated as a term of abuse first used against early working class radicals " * 12)[:1000]
    _put(d, "text8", "text8", raw)
    ds = data.load("text8")
    _check_hutter_split(ds, raw)
    assert ds.vocab_size <= 27


# ---------------------------------------------------------------------------------------------
# file:PATH
# ---------------------------------------------------------------------------------------------
def test_file_task(tmp_path):
    rng = np.random.default_rng(0)
    alphabet = list("abcdefghij \nÉßπ😀")
    text = "".join(rng.choice(alphabet, 5000))
    p = tmp_path / "corpus.txt"
    p.write_text(text, encoding="utf-8")
    ds = data.load(f"file:{p}")
    assert ds.name == f"file:{p}"
    assert ds.chars == tuple(sorted(set(text)))  # characters, not bytes
    assert len(ds.train) == int(0.9 * len(text)) and len(ds.train) + len(ds.val) == len(text)
    assert ds.decode(ds.train) + ds.decode(ds.val) == text
    assert ds.meta["encoding"] == "utf-8"


def test_file_task_latin1_fallback(tmp_path):
    raw = bytes(range(32, 256)) * 20  # not valid UTF-8
    p = tmp_path / "latin.txt"
    p.write_bytes(raw)
    ds = data.load(f"file:{p}")
    assert ds.meta["encoding"] == "latin-1" and ds.vocab_size == 224
    assert ds.decode(ds.train) + ds.decode(ds.val) == raw.decode("latin-1")


def test_file_task_too_short(tmp_path):
    p = tmp_path / "short.txt"
    p.write_text("x" * 1999)
    with pytest.raises(data.DatasetError, match="1999 characters; at least 2000") as e:
        data.load(f"file:{p}")
    assert str(p) in str(e.value)


def test_file_task_missing(tmp_path):
    p = tmp_path / "nope" / "missing.txt"
    with pytest.raises(data.DatasetError, match="no such file") as e:
        data.load(f"file:{p}")
    assert str(p) in str(e.value)


def test_unknown_task_lists_known_ones():
    with pytest.raises(data.DatasetError, match="unknown task 'shakespeare'") as e:
        data.load("shakespeare")
    assert "shakespeare_char" in str(e.value) and "file:PATH" in str(e.value)


# ---------------------------------------------------------------------------------------------
# offline corpora
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("name, min_chars, min_vocab", [
    ("python_docs", 200_000, 60),
    ("unicode_names", 300_000, 30),
])  # python_stdlib / python_docstrings: 10-20 s each to build, not tested here
def test_offline_corpora(isolated, name, min_chars, min_vocab):
    _, cache = isolated
    ds = data.load(name)
    n = len(ds.train) + len(ds.val)
    assert n >= min_chars and ds.vocab_size >= min_vocab
    assert len(ds.train) == int(0.9 * n)
    assert int(ds.train.max()) < ds.vocab_size and int(ds.val.max()) < ds.vocab_size
    chars = np.array(ds.chars, dtype=object)
    text = "".join(chars[ds.train]) + "".join(chars[ds.val])
    assert hashlib.sha256(text.encode("utf-8")).hexdigest() == ds.meta["sha256"]
    assert text == data.offline_corpus_text(name)
    assert len(set(text[: n // 2])) > 20  # real text, not a constant
    # it was cached under LRPILOT_CACHE_DIR and loads the same from there
    cached = list((cache / "offline").glob(f"{name}-*.txt"))
    assert len(cached) == 1
    data._CACHE.clear()
    again = data.load(name)
    assert again.meta["sha256"] == ds.meta["sha256"]
    np.testing.assert_array_equal(again.val, ds.val)


def test_misplaced_tasks_names_test_tasks_and_unknown_names():
    from lrpilot.data import misplaced_tasks

    assert misplaced_tasks(["python_docs", "licenses", "file:/x.txt"]) == ([], [])
    assert misplaced_tasks(["text8", "python_docs", "klingon", "enwik8"]) == (["text8", "enwik8"], ["klingon"])
