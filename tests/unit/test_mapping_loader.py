"""Loading and validating mapping files: every error names file:line and the field."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from worker.mapping import MappingError, load_mappings

REPO_MAPPINGS = Path(__file__).resolve().parents[2] / "mappings"
SETTINGS = {"oracle_phone_channel_id": 1000, "caliq_channel_id": 1}


@pytest.fixture
def mdir(tmp_path: Path) -> Path:
    for name in ("oracle.yaml", "caliq.yaml", "agents.csv"):
        shutil.copy(REPO_MAPPINGS / name, tmp_path / name)
    return tmp_path


def _replace(path: Path, old: str, new: str) -> int:
    """Replace `old` once and return the 1-based line it was on."""
    text = path.read_text()
    assert old in text, old
    line = text[: text.index(old)].count("\n") + 1
    path.write_text(text.replace(old, new, 1))
    return line


def _error(mdir: Path) -> MappingError:
    with pytest.raises(MappingError) as err:
        load_mappings(mdir, SETTINGS)
    return err.value


def test_shipped_files_load() -> None:
    m = load_mappings(REPO_MAPPINGS, SETTINGS)
    assert set(m.agents) == {101, 102, 103}
    assert m.agents[101].oracle_resource_id == 300100000001101
    assert m.agents[101].caliq_employee_id == "E101"


def test_shipped_files_load_without_settings() -> None:
    load_mappings(REPO_MAPPINGS)  # settings default to the known names


def test_shipped_files_map_default_udata_keys() -> None:
    oracle = (REPO_MAPPINGS / "oracle.yaml").read_text()
    caliq = (REPO_MAPPINGS / "caliq.yaml").read_text()
    assert "udata.OracleAccountPartyId" in oracle
    for key in ("CaliqCustomerID", "CaliqAccountNo", "CaliqEmployeeID", "FirstName", "LastName"):
        assert f"udata.{key}" in caliq


def test_unknown_oracle_field_names_line(mdir: Path) -> None:
    line = _replace(mdir / "oracle.yaml", "  Description:", "  Descriptoin:")
    err = _error(mdir)
    assert str(err).startswith(f"{mdir / 'oracle.yaml'}:{line}: interaction.Descriptoin: ")
    assert "unknown Oracle interaction field 'Descriptoin'" in str(err)
    assert "did you mean 'Description'" in str(err)


def test_unknown_caliq_field(mdir: Path) -> None:
    line = _replace(mdir / "caliq.yaml", "  Notes:", "  Note:")
    err = _error(mdir)
    assert (err.path, err.line) == (str(mdir / "caliq.yaml"), line)
    assert "interaction_create.Note: unknown Caliq InteractionCreate field 'Note'" in str(err)


def test_unknown_transform(mdir: Path) -> None:
    line = _replace(mdir / "oracle.yaml", "transform: oracle_datetime}", "transform: oracle_date}")
    err = _error(mdir)
    assert err.line == line
    assert "interaction.StartTime: unknown transform 'oracle_date'" in str(err)


def test_unknown_transform_in_list_names_its_line(mdir: Path) -> None:
    path = mdir / "caliq.yaml"
    line = _replace(
        path,
        "  Notes: {source: call.summary, transform: redact}",
        "  Notes:\n    source: call.summary\n    transform:\n      - redact\n      - shout",
    )
    err = _error(mdir)
    assert err.line == line + 4
    assert "unknown transform 'shout'" in str(err)


def test_unknown_source_root(mdir: Path) -> None:
    line = _replace(mdir / "oracle.yaml", "{source: subject,", "{source: subjekt,")
    err = _error(mdir)
    assert err.line == line
    assert "interaction.Description: unknown source 'subjekt'" in str(err)


@pytest.mark.parametrize(
    ("source", "problem"),
    [
        ("agent.email", "unknown agent attribute 'email'"),
        ("settings.caliq_api_key", "unknown settings attribute 'caliq_api_key'"),
        ("call.transcript", "unknown call attribute 'transcript'"),
        ("message.text", "unknown source 'message.text'"),  # only inside transcript.message
        ("udata", "udata needs a key"),
        ("subject.first", "has no sub-field"),
    ],
)
def test_bad_source_paths(mdir: Path, source: str, problem: str) -> None:
    _replace(mdir / "oracle.yaml", "{source: subject,", f"{{source: {source},")
    assert problem in str(_error(mdir))


def test_unknown_section(mdir: Path) -> None:
    path = mdir / "oracle.yaml"
    path.write_text(path.read_text() + "\ninteractoin:\n  Description: {value: x}\n")
    line = path.read_text().count("\n") - 1
    err = _error(mdir)
    assert err.line == line
    assert "unknown section 'interactoin'" in str(err)


def test_unknown_spec_key_and_bad_required(mdir: Path) -> None:
    line = _replace(mdir / "oracle.yaml", 'default: "Phone call"}', "defualt: x}")
    err = _error(mdir)
    assert err.line == line and "unknown key 'defualt'" in str(err)


def test_required_must_be_boolean(mdir: Path) -> None:
    _replace(
        mdir / "caliq.yaml",
        "source: interaction_id, required: true",
        "source: interaction_id, required: yes please",
    )
    assert "required must be true or false" in str(_error(mdir))


def test_source_and_value_together_rejected(mdir: Path) -> None:
    _replace(mdir / "caliq.yaml", "Kind: {value: C}", "Kind: {value: C, source: type}")
    assert "exactly one of source, value or template" in str(_error(mdir))


def test_constant_checked_against_schema_at_load(mdir: Path) -> None:
    line = _replace(mdir / "caliq.yaml", "Kind: {value: C}", "Kind: {value: Call}")
    err = _error(mdir)
    assert err.line == line
    assert "interaction_create.Kind" in str(err) and "documented maximum is 1" in str(err)


def test_default_type_checked_at_load(mdir: Path) -> None:
    _replace(
        mdir / "oracle.yaml",
        "  AccountPartyId: {source: udata.OracleAccountPartyId, transform: integer}",
        "  AccountPartyId: {source: udata.OracleAccountPartyId, transform: integer, default: n/a}",
    )
    err = _error(mdir)
    assert "interaction.AccountPartyId: default 'n/a' does not fit" in str(err)


def test_reserved_field_rejected(mdir: Path) -> None:
    path = mdir / "oracle.yaml"
    line = _replace(path, "  PhoneNumber:", "  InteractionId: {value: 1}\n  PhoneNumber:")
    err = _error(mdir)
    assert err.line == line and "set by callsync" in str(err)


def test_required_caliq_field_must_be_mapped(mdir: Path) -> None:
    _replace(mdir / "caliq.yaml", "  UniqueID: {source: interaction_id, required: true}\n", "")
    assert "required Caliq InteractionCreate field 'UniqueID' is not mapped" in str(_error(mdir))


def test_yaml_syntax_error_has_line(mdir: Path) -> None:
    line = _replace(mdir / "caliq.yaml", "Kind: {value: C}", "Kind: {value: C")
    err = _error(mdir)
    assert err.path == str(mdir / "caliq.yaml")
    assert line <= err.line <= line + 1
    assert "invalid YAML" in str(err)


def test_duplicate_yaml_key(mdir: Path) -> None:
    path = mdir / "caliq.yaml"
    line = _replace(path, "  Notes:", "  Kind: {value: E}\n  Notes:")
    err = _error(mdir)
    assert err.line == line and "duplicate key" in str(err)


def test_missing_file(mdir: Path) -> None:
    (mdir / "caliq.yaml").unlink()
    assert str(_error(mdir)) == f"{mdir / 'caliq.yaml'}:1: file not found"


def test_direction_code_too_long(mdir: Path) -> None:
    line = _replace(mdir / "oracle.yaml", "outbound: ORA_SVC_OUTBOUND", "outbound: " + "X" * 31)
    err = _error(mdir)
    assert err.line == line and "directions.outbound" in str(err)


def test_agents_duplicate_owner_names_csv_line(mdir: Path) -> None:
    path = mdir / "agents.csv"
    path.write_text(path.read_text() + "102,300100000009999,E999,Dup\n")
    err = _error(mdir)
    assert err.path == str(path) and err.line == 5
    assert "duplicate owner_id 102 (first seen on line 3)" in str(err)


def test_agents_bad_header(mdir: Path) -> None:
    (mdir / "agents.csv").write_text("owner,oracle_resource_id,caliq_employee_id\n101,1,E1\n")
    err = _error(mdir)
    assert err.line == 1 and "unknown column 'owner'" in str(err)


@pytest.mark.parametrize(
    ("row", "problem"),
    [
        ("10x,300100000001104,E104", "owner_id: '10x'"),
        ("104,ABC,E104", "oracle_resource_id: 'ABC'"),
        ("104,300100000001104,EMPLOYEE-104", "caliq_employee_id: 'EMPLOYEE-104'"),
        ("104,,", "neither an Oracle nor a Caliq id"),
        ("104,1", "expected 4 columns, found 2"),
    ],
)
def test_agents_bad_rows(mdir: Path, row: str, problem: str) -> None:
    path = mdir / "agents.csv"
    path.write_text(path.read_text() + "# comment row\n" + row + "\n")
    err = _error(mdir)
    assert err.line == 6 and problem in str(err)
