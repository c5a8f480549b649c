"""training/files.py (issue 16: every result written through it): a result is replaced whole or not at all,
with no temporary left behind, for streamed writes (`atomic_writer`), libraries that write by path
(`atomic_path`), whole folders (`atomic_directory`), and the package's writers built on them."""

import os
import stat
import subprocess
import sys

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from mlpl.loaders import write_flashlight_list
from mlpl.files import atomic_directory, atomic_path, atomic_writer, write_text_atomically


def umask() -> int:
    value = os.umask(0o022)
    os.umask(value)
    return value


def test_atomic_writer_replaces_the_file_with_exactly_the_bytes_written_and_open_s_permissions(tmp_path):
    path = tmp_path / "report.md"
    path.write_text("old\n", encoding="utf-8")
    with atomic_writer(path) as output:
        output.write("line 1\n")
        output.write("ünïcode ✓\n")
        assert path.read_text(encoding="utf-8") == "old\n"  # nothing visible before the block ends
    assert path.read_bytes() == "line 1\nünïcode ✓\n".encode("utf-8")
    assert stat.S_IMODE(path.stat().st_mode) == 0o666 & ~umask()  # not tempfile's 0600
    assert sorted(p.name for p in tmp_path.iterdir()) == ["report.md"]

    with atomic_writer(tmp_path / "new" / "blob.bin", "wb") as output:  # missing folders are made
        output.write(b"\x00\x01\xff")
    assert (tmp_path / "new" / "blob.bin").read_bytes() == b"\x00\x01\xff"

    with atomic_writer(tmp_path / "table.tsv", newline="") as output:  # newline as in open(): "\r\n" kept
        output.write("a\r\nb\n")
    assert (tmp_path / "table.tsv").read_bytes() == b"a\r\nb\n"


def test_an_exception_mid_write_leaves_the_old_file_and_no_temporary(tmp_path):
    path = tmp_path / "metrics.json"
    path.write_text('{"cer": 0.1}\n', encoding="utf-8")
    with pytest.raises(RuntimeError, match="disk on fire"):
        with atomic_writer(path) as output:
            output.write('{"cer": 0.')
            raise RuntimeError("disk on fire")
    assert path.read_text(encoding="utf-8") == '{"cer": 0.1}\n'
    assert sorted(p.name for p in tmp_path.iterdir()) == ["metrics.json"]

    with pytest.raises(RuntimeError):  # no old file: nothing at all afterwards
        with atomic_writer(tmp_path / "fresh.txt") as output:
            output.write("half")
            raise RuntimeError
    assert sorted(p.name for p in tmp_path.iterdir()) == ["metrics.json"]

    with pytest.raises(ValueError, match="mode='a'"):
        with atomic_writer(path, "a"):
            pass


def test_a_process_killed_mid_write_leaves_the_old_file(tmp_path):
    path = tmp_path / "lm.arpa"
    path.write_text("complete old model\n", encoding="utf-8")
    killed = subprocess.run(
        [sys.executable, "-c", (
            "import os, sys\n"
            "from mlpl.files import atomic_writer\n"
            "with atomic_writer(sys.argv[1]) as output:\n"
            "    output.write('half of a new model'); output.flush()\n"
            "    os._exit(9)\n"
        ), str(path)],
        cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
    )  # fmt: skip
    assert killed.returncode == 9
    assert path.read_text(encoding="utf-8") == "complete old model\n"
    leftovers = [p.name for p in tmp_path.iterdir() if p.name != "lm.arpa"]
    assert all(name.startswith(".lm.arpa.") and name.endswith(".tmp") for name in leftovers)  # hidden, never the result


def test_atomic_path_for_a_library_that_writes_by_path(tmp_path):
    path = tmp_path / "part.parquet"
    with atomic_path(path) as temporary:
        assert temporary.parent == tmp_path and temporary != path
        pq.write_table(pa.table({"id": ["a", "b"]}), temporary)
    assert pq.read_table(path).column("id").to_pylist() == ["a", "b"]

    with pytest.raises(pa.ArrowInvalid):
        with atomic_path(path) as temporary:
            pq.write_table(pa.table({"id": ["c"]}), temporary)
            pa.table({"id": ["c"], "x": [1, 2]})  # ragged columns: raises
    assert pq.read_table(path).column("id").to_pylist() == ["a", "b"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["part.parquet"]


def test_atomic_directory_swaps_a_whole_folder_or_leaves_the_old_one(tmp_path):
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    (corpus / "old.tsv").write_text("old\n", encoding="utf-8")
    with pytest.raises(KeyboardInterrupt):
        with atomic_directory(corpus) as building:
            (building / "new.tsv").write_text("new\n", encoding="utf-8")
            raise KeyboardInterrupt
    assert sorted(p.name for p in tmp_path.iterdir()) == ["corpus"]
    assert sorted(p.name for p in corpus.iterdir()) == ["old.tsv"]

    with atomic_directory(corpus) as building:
        assert building.name.startswith(".corpus.building-")
        (building / "new.tsv").write_text("new\n", encoding="utf-8")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["corpus"]
    assert sorted(p.name for p in corpus.iterdir()) == ["new.tsv"]
    assert stat.S_IMODE(corpus.stat().st_mode) == 0o777 & ~umask()  # not mkdtemp's 0700


def test_the_package_s_writers_keep_the_old_result_on_bad_input(tmp_path):
    listing = tmp_path / "train.lst"
    write_flashlight_list([{"id": "a", "path": "a.ogg", "duration": 1.0, "sentence": "hello"}], listing)
    before = listing.read_bytes()
    with pytest.raises(ValueError, match="whitespace"):
        write_flashlight_list(
            [{"id": "b", "path": "b.ogg", "duration": 1.0}, {"id": "has space", "path": "c.ogg", "duration": 1.0}], listing
        )
    assert listing.read_bytes() == before == b"a\ta.ogg\t1000.00\thello\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["train.lst"]
    assert write_text_atomically(tmp_path / "card.md", "# card\n").read_text(encoding="utf-8") == "# card\n"


def test_a_resumed_pseudo_label_writer_removes_the_temporary_of_a_part_it_was_killed_writing(tmp_path):
    from mlpl.pseudo_label.layout import DATA_FOLDER, PSEUDO_LABEL_FEATURES
    from mlpl.pseudo_label.writer import RankWriter

    writer = RankWriter(tmp_path, rank=0, rows_per_shard=1)
    (tmp_path / DATA_FOLDER).mkdir()
    row = {name: None for name in PSEUDO_LABEL_FEATURES.names} | {"id": "a"}
    writer.add(row)
    writer.flush({"batch": 1})  # one finished part, listed in the progress file
    data = tmp_path / DATA_FOLDER
    (data / ".rank-00000-part-00001.parquet.x1y2.tmp").write_bytes(b"PAR1 half")  # killed inside atomic_path
    (data / ".rank-00001-part-00000.parquet.z3.tmp").write_bytes(b"PAR1")  # another rank's: not this one's to remove
    resumed = RankWriter(tmp_path, rank=0, rows_per_shard=1)
    assert resumed.load() and resumed.parts == ["rank-00000-part-00000.parquet"]
    assert sorted(p.name for p in data.iterdir()) == [".rank-00001-part-00000.parquet.z3.tmp", "rank-00000-part-00000.parquet"]
