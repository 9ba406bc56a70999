"""Probe sets: the bundled default, the three file formats, the content hash, and errors for bad files."""

from __future__ import annotations

import csv
import hashlib
import json
from collections.abc import Callable, Sequence
from pathlib import Path

import pytest

from bot.errors import ConfigError
from bot.reef.probes import DEFAULT_PROBES, ProbeSet, load_probes

TEXTS = (
    "Water boils at 100 °C at sea level.",
    "Q: Capital of Peru? A: Lima",
    "naïve café, 東京, Москва 🙂",
    'She said "hi", then left.',
)


def expected_sha256(texts: Sequence[str]) -> str:
    """The documented hash, computed independently of the loader."""
    return hashlib.sha256(json.dumps(list(texts), ensure_ascii=False).encode("utf-8")).hexdigest()


def write_txt(path: Path, texts: Sequence[str]) -> Path:
    path.write_text("".join(f"{text}\n" for text in texts), encoding="utf-8")
    return path


def write_jsonl(path: Path, texts: Sequence[str]) -> Path:
    lines = (json.dumps({"text": text}, ensure_ascii=False) for text in texts)
    path.write_text("".join(f"{line}\n" for line in lines), encoding="utf-8")
    return path


def write_csv(path: Path, texts: Sequence[str]) -> Path:
    with path.open("w", encoding="utf-8", newline="") as file:
        writer = csv.writer(file)
        writer.writerow(["id", "text"])
        writer.writerows([index, text] for index, text in enumerate(texts))
    return path


WRITERS: dict[str, Callable[[Path, Sequence[str]], Path]] = {
    ".txt": write_txt,
    ".jsonl": write_jsonl,
    ".csv": write_csv,
}


# The bundled default set.


def test_default_set_has_at_least_512_unique_clean_texts() -> None:
    probes = load_probes()
    assert probes.name == DEFAULT_PROBES
    assert len(probes) >= 512
    assert len(set(probes.texts)) == len(probes.texts)
    assert all(text and text == text.strip() for text in probes.texts)


def test_default_set_mixes_languages_and_code() -> None:
    texts = load_probes().texts
    assert sum(not text.isascii() for text in texts) >= 100
    scripts = {"Han": ("\u4e00", "\u9fff"), "Cyrillic": ("\u0400", "\u04ff"), "Arabic": ("\u0600", "\u06ff")}
    for low, high in scripts.values():
        assert any(low <= char <= high for text in texts for char in text)
    assert sum("\n" in text for text in texts) >= 50
    assert any(text.startswith("def ") and "\n    return" in text for text in texts)


def test_default_file_is_one_text_object_per_line() -> None:
    path = Path(__file__).parents[2] / "bot" / "reef" / "probes" / "default.jsonl"
    lines = path.read_text(encoding="utf-8").split("\n")
    assert lines[-1] == ""
    records = [json.loads(line) for line in lines[:-1]]
    assert all(list(record) == ["text"] for record in records)
    assert "\\u" not in path.read_text(encoding="utf-8")  # written with ensure_ascii=False


def test_default_hash_is_the_documented_formula_and_stable() -> None:
    first, second = load_probes(), load_probes(DEFAULT_PROBES)
    assert first == second
    assert first.sha256 == expected_sha256(first.texts)
    assert len(first.sha256) == 64


# The three file formats.


@pytest.mark.parametrize("suffix", sorted(WRITERS))
def test_every_format_loads_the_same_texts_and_hash(tmp_path: Path, suffix: str) -> None:
    path = WRITERS[suffix](tmp_path / f"my-probes{suffix}", TEXTS)
    probes = load_probes(path)
    assert probes == ProbeSet(name=f"my-probes{suffix}", texts=TEXTS, sha256=expected_sha256(TEXTS))


def test_string_paths_work_like_path_objects(tmp_path: Path) -> None:
    path = write_txt(tmp_path / "probes.txt", TEXTS)
    assert load_probes(str(path)) == load_probes(path)


def test_hash_changes_when_one_text_or_the_order_changes(tmp_path: Path) -> None:
    original = load_probes(write_txt(tmp_path / "a.txt", TEXTS))
    edited = load_probes(write_txt(tmp_path / "b.txt", (*TEXTS[:-1], TEXTS[-1] + "!")))
    reordered = load_probes(write_txt(tmp_path / "c.txt", TEXTS[::-1]))
    assert len({original.sha256, edited.sha256, reordered.sha256}) == 3


def test_txt_strips_lines_and_skips_blank_ones(tmp_path: Path) -> None:
    path = tmp_path / "probes.txt"
    path.write_text("\n  first text  \r\n\n\t\nsecond text\n\n", encoding="utf-8")
    assert load_probes(path).texts == ("first text", "second text")


def test_jsonl_skips_blank_lines_and_keeps_newlines_in_texts(tmp_path: Path) -> None:
    path = tmp_path / "probes.jsonl"
    path.write_text('{"text": "for x in y:\\n    f(x)"}\n\n{"text": "b", "source": "me"}\n', encoding="utf-8")
    assert load_probes(path).texts == ("for x in y:\n    f(x)", "b")


def test_csv_without_text_column_uses_the_first_column(tmp_path: Path) -> None:
    path = tmp_path / "probes.csv"
    path.write_text('prompt,lang\n"one, with comma",en\n"two\nlines",en\n', encoding="utf-8")
    assert load_probes(path).texts == ("one, with comma", "two\nlines")


def test_csv_saved_by_a_spreadsheet_with_a_byte_order_mark(tmp_path: Path) -> None:
    path = tmp_path / "probes.csv"
    path.write_text("\ufefftext\r\nalpha\r\nbeta\r\n", encoding="utf-8")
    assert load_probes(path).texts == ("alpha", "beta")


def test_duplicate_texts_are_kept_in_order(tmp_path: Path) -> None:
    probes = load_probes(write_txt(tmp_path / "probes.txt", ["same", "other", "same"]))
    assert probes.texts == ("same", "other", "same")


# Bad input: every failure is a ConfigError that names the file and says what to do.


def assert_config_error(spec: str | Path, *fragments: str) -> ConfigError:
    with pytest.raises(ConfigError) as caught:
        load_probes(spec)
    message = str(caught.value)
    assert "\n" not in message
    for fragment in fragments:
        assert fragment in message
    return caught.value


def test_missing_file(tmp_path: Path) -> None:
    error = assert_config_error(tmp_path / "nope.txt", "nope.txt: no such probe file", "check the path")
    assert error.path == tmp_path / "nope.txt"


@pytest.mark.parametrize("name", ["probes.txt", "probes.jsonl", "probes.csv"])
def test_empty_file(tmp_path: Path, name: str) -> None:
    (tmp_path / name).write_text("", encoding="utf-8")
    assert_config_error(tmp_path / name, f"{name}: no probe texts (the file is empty); give at least 2")


def test_blank_lines_only(tmp_path: Path) -> None:
    (tmp_path / "probes.txt").write_text("\n   \n\n", encoding="utf-8")
    assert_config_error(tmp_path / "probes.txt", "probes.txt: no probe texts (only blank lines)")


def test_csv_with_a_header_but_no_rows(tmp_path: Path) -> None:
    (tmp_path / "probes.csv").write_text("text\n\n", encoding="utf-8")
    assert_config_error(tmp_path / "probes.csv", "probes.csv: no probe texts (a header row but no data rows)")


def test_csv_row_without_its_text_cell(tmp_path: Path) -> None:
    (tmp_path / "probes.csv").write_text("id,text\n1,alpha\n2\n", encoding="utf-8")
    error = assert_config_error(tmp_path / "probes.csv", "probes.csv: line 3 has no text in column 'text'")
    assert error.key == "text"


def test_malformed_json_names_the_line(tmp_path: Path) -> None:
    (tmp_path / "probes.jsonl").write_text('{"text": "ok"}\n\n{"text": "broken}\n', encoding="utf-8")
    assert_config_error(tmp_path / "probes.jsonl", "probes.jsonl: line 3 is not valid JSON", '{"text": "..."}')


@pytest.mark.parametrize("line", ['{"prompt": "hi"}', '{"text": 3}', '["hi"]', '"hi"'])
def test_jsonl_line_without_a_string_text(tmp_path: Path, line: str) -> None:
    (tmp_path / "probes.jsonl").write_text(f'{{"text": "ok"}}\n{line}\n', encoding="utf-8")
    error = assert_config_error(tmp_path / "probes.jsonl", 'probes.jsonl: line 2 has no string "text" field')
    assert error.key == "text"


def test_jsonl_line_with_an_empty_text(tmp_path: Path) -> None:
    (tmp_path / "probes.jsonl").write_text('{"text": "ok"}\n{"text": "  "}\n', encoding="utf-8")
    assert_config_error(tmp_path / "probes.jsonl", 'probes.jsonl: line 2 has an empty "text"')


@pytest.mark.parametrize("suffix", sorted(WRITERS))
def test_a_single_text_is_too_few(tmp_path: Path, suffix: str) -> None:
    path = WRITERS[suffix](tmp_path / f"probes{suffix}", ["only one"])
    assert_config_error(path, f"probes{suffix}: only 1 probe text; give at least 2")


@pytest.mark.parametrize("spec", ["probes.yaml", "v9"])
def test_unsupported_suffix_names_the_supported_ones(tmp_path: Path, spec: str) -> None:
    assert_config_error(tmp_path / spec, "unsupported probe file type", ".txt, .jsonl or .csv", "'default'")


def test_file_that_is_not_utf8(tmp_path: Path) -> None:
    (tmp_path / "probes.txt").write_bytes("first line\ncaf\u00e9 au lait\n".encode("latin-1"))
    assert_config_error(
        tmp_path / "probes.txt", "probes.txt: not valid UTF-8 (byte 0xe9 on line 2)", "save the file as UTF-8"
    )


def test_directory_instead_of_a_file(tmp_path: Path) -> None:
    (tmp_path / "probes.txt").mkdir()
    assert_config_error(tmp_path / "probes.txt", "probes.txt: cannot read the probe file")
