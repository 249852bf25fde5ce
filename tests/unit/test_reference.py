"""docs/reference.md is generated from the programs' parsers and metric registries."""

from tools import reference


def test_reference_is_current() -> None:
    assert reference.main(["--check"]) == 0, "run `python -m tools.reference`, commit docs/reference.md"


def test_reference_lists_every_program_and_metric_family() -> None:
    text = reference.render()
    for program, _ in reference.PROGRAMS:
        assert f"### `{program}`" in text
    assert "`lbspeaker_speaker_announced`" in text
    assert "`lbspeaker_allocator_addresses_in_use_total`" in text
