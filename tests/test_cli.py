"""python -m ewcbook reproduce: the table, the JSON, the seed's claims in small."""

import json

import pytest

from ewcbook.__main__ import main, markdown_table


def test_markdown_table_formats_numbers():
    table = markdown_table(
        [{"method": "ewc", "strength": 1e4, "acc_A": 0.51234, "seconds": 2.5}],
        ["method", "strength", "acc_A", "seconds"],
    )
    assert table.splitlines() == [
        "| method | strength | acc_A | seconds |",
        "|---|---|---|---|",
        "| ewc | 10000 | 0.512 | 2.5 |",
    ]


def test_unknown_profile_is_refused(capsys):
    with pytest.raises(SystemExit):
        main(["reproduce", "--profile", "huge"])
    assert "invalid choice" in capsys.readouterr().err


@pytest.mark.mnist
def test_reproduce_smoke_writes_json_and_shows_forgetting(tmp_path, capsys):
    path = tmp_path / "results.json"
    assert main(["reproduce", "--profile", "smoke", "--json", str(path)]) == 0
    assert "| joint |" in capsys.readouterr().out
    results = json.loads(path.read_text())
    assert results["profile"] == "smoke"
    runs = {r["method"]: r for r in results["runs"]}
    assert set(runs) == {"joint", "none", "l2", "ewc"}
    assert all(set(r) == {"method", "strength", "acc_A", "acc_B", "seconds"} for r in runs.values())
    assert runs["none"]["acc_A"] < runs["joint"]["acc_A"] - 0.1, "sequential training forgets task A"
    assert runs["l2"]["acc_A"] > runs["none"]["acc_A"], "the anchor keeps more of task A"
    permuted = {r["method"]: r for r in results["permuted"]}
    assert set(permuted) == {"none", "ewc"} and all(0 <= r["average_accuracy"] <= 1 for r in permuted.values())


def test_reproduce_uses_chapter_6_final_settings():
    import nbformat
    from conftest import BOOK, glued_values

    from ewcbook.__main__ import PERMUTED, PERMUTED_STRENGTHS

    v = glued_values(nbformat.read(BOOK / "06_beyond_two_tasks.ipynb", as_version=4))
    assert (PERMUTED["epochs"], PERMUTED["batch_size"], PERMUTED["fisher_samples"]) == (
        v["ch6_epochs"],
        v["ch6_batch"],
        v["ch6_fisher_samples"],
    )
    assert PERMUTED["reset_optimizer"] is False, "chapter 6 keeps one Adam across tasks"
    assert PERMUTED_STRENGTHS["ewc"] == v["ch6_strength_ewc"]
