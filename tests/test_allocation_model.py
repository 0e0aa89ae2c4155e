"""The community model from TOML: hierarchy, derived lists, and errors that name the field."""

from __future__ import annotations

import tomllib
from pathlib import Path

import pytest

from services.allocation import AllocationInputError, Settings, load_community, parse_community

FIXTURES = Path(__file__).parent / "fixtures" / "allocation"
EXAMPLE = Path(__file__).resolve().parents[1] / "demo" / "operation.toml"
BASE = (FIXTURES / "community.toml").read_text()


def test_hierarchy_and_derived_lists() -> None:
    c = load_community(FIXTURES / "community.toml")
    assert (c.coordinator.id, c.id, c.kind) == ("coop", "rue-haute", "CER")
    assert [op.id for op in c.operations] == ["ecole", "hangar"]
    ecole = c.operation("ecole")
    assert ecole.key_rounds == ("equal", "prorata") and ecole.key_label == "equal,prorata"
    assert ecole.participants == ["school", "h1", "h2"] and ecole.producers == ["school"]
    assert ecole.shares is None and ecole.settings == Settings() and ecole.timezone == "Europe/Brussels"
    hangar = c.operation("hangar")
    assert hangar.key_rounds == ("specific",) and hangar.key_label == "fixed-specific"
    assert hangar.participants == ["h3", "h4"] and hangar.producers == ["pv"]
    assert hangar.shares == {"h3": 0.6, "h4": 0.4}
    assert hangar.settings.first_round == "short" and hangar.timezone == "Europe/Amsterdam"
    assert hangar.member("pv").role == "producer"


def test_several_operations_need_an_id() -> None:
    c = load_community(FIXTURES / "community.toml")
    with pytest.raises(AllocationInputError, match="several operations"):
        c.operation()
    with pytest.raises(AllocationInputError, match="no operation 'x'"):
        c.operation("x")


def test_example_operation_has_twenty_members() -> None:
    op = load_community(EXAMPLE).operation()
    assert len(op.members) == 20
    assert op.key_rounds == ("equal", "equal", "prorata")
    assert len(op.participants) == 19 and len(op.producers) == 6
    assert sum(op.shares.values()) == pytest.approx(1.0)


@pytest.mark.parametrize(
    ("old", "new", "field", "words"),
    [
        ('id = "h2"', 'id = "h1"', "operations[0].members[2].id", "duplicate member id 'h1'"),
        ('id = "h2"', 'id = "h 2"', "operations[0].members[2].id", "not a valid id"),
        ('id = "h2"', 'id = "h2"\nrole = "prosumer"', "operations[0].members[2].role", "consumer"),
        ("share = 0.6", "share = 1.6", "operations[1].members[1].share", "less than or equal to 1"),
        ("share = 0.6", "share = 0.7", "operations[1].members[*].share", "more than 100%"),
        ("share = 0.4", "", "operations[1].members[2].share", "missing"),
        ('role = "producer"', 'role = "producer"\nshare = 0.0', "operations[1].members[0].share", "producer-only"),
        ('rounds = ["equal", "prorata"]', 'rounds = ["equal", "prorata", "equal", "equal"]', "operations[0].rounds", "at most 3"),
        ('rounds = ["equal", "prorata"]', 'rounds = ["equal", "random"]', "operations[0].rounds[1]", "unknown key"),
        ('rounds = ["equal", "prorata"]', 'rounds = ["equal"]\npreset = "aubange"', "operations[0].preset", "not both"),
        ('rounds = ["equal", "prorata"]', "", "operations[0].rounds", "missing"),
        ('first_round = "short"', 'first_round = "some"', "operations[1].settings.first_round", "'all' or 'short'"),
        ('first_round = "short"', 'first_rounds = "short"', "operations[1].settings.first_rounds", "unknown field"),
        ('timezone = "Europe/Amsterdam"', 'timezone = "Europe/Atlantis"', "operations[1].timezone", "unknown time zone"),
        ('meter = "541448820000000022"', 'meter = "541448820000000015"', "operations[0].members[1].meter", "already"),
        ('id = "hangar"', 'id = "ecole"', "operations[1].id", "duplicate operation id"),
        ('kind = "CER"', 'kind = "CER"\ncolour = "green"', "colour", "unknown field"),
    ],
)
def test_errors_name_the_field(old: str, new: str, field: str, words: str) -> None:
    assert old in BASE
    text = BASE.replace(old, new, 1)
    with pytest.raises(AllocationInputError) as exc:
        parse_community(tomllib.loads(text))
    assert exc.value.field == field
    assert words in str(exc.value)


def test_no_consumer_is_refused() -> None:
    data = tomllib.loads(
        '[community]\nid = "c"\n[[operations]]\nid = "o"\npreset = "prorata"\n[[operations.members]]\nid = "pv"\nrole = "producer"\n'
    )
    with pytest.raises(AllocationInputError, match=r"operations\[0\]\.members: no consumer"):
        parse_community(data)


def test_missing_community_table_and_unknown_top_level_table() -> None:
    with pytest.raises(AllocationInputError, match="missing \\[community\\]"):
        parse_community({"operations": []})
    with pytest.raises(AllocationInputError, match="unknown table"):
        parse_community({"community": {"id": "c"}, "operation": []})


def test_file_errors_name_the_file(tmp_path: Path) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text("[community\nid = 1")
    with pytest.raises(AllocationInputError) as exc:
        load_community(bad)
    assert str(bad) in str(exc.value) and "not valid TOML" in str(exc.value)
    wrong = tmp_path / "wrong.toml"
    wrong.write_text(BASE.replace("share = 0.6", "share = -1"))
    with pytest.raises(AllocationInputError) as exc:
        load_community(wrong)
    assert str(exc.value).startswith(f"{wrong}: operations[1].members[1].share: ")
