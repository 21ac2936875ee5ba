"""Names of a source's temporaries: from the engine's tag, safe as a file name, never the disk's."""

from __future__ import annotations

from godwit.sources.temp_names import temp_name


def test_tag_is_kept_when_safe() -> None:
    assert temp_name("9f3c1a2b4d5e6f70-d1-c42") == "9f3c1a2b4d5e6f70-d1-c42"


def test_tag_cannot_leave_the_folder_or_hide() -> None:
    for tag in ("../../etc/passwd", "/abs/path", ".hidden", "a\nb", "x" * 500):
        name = temp_name(tag)
        assert "/" not in name and "\n" not in name and not name.startswith(".")
        assert 0 < len(name) <= 80


def test_no_tag_is_unique_per_open() -> None:
    names = {temp_name(None) for _ in range(100)}
    assert len(names) == 100
    assert all(n.startswith("anon-") for n in names)
    assert temp_name("") != temp_name("")
