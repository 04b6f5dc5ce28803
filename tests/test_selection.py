"""`-k` expressions (pytest-like), `crc list` and `crc run --list`, and "matched nothing" hints."""

from __future__ import annotations

from pathlib import Path

import pytest
from crc.runtime.selection import SelectError, closest, compile_expr, exact, matcher

from crc.cli import main

TESTS = [("checkout", "Order is placed"), ("checkout", "order is refunded"), ("checkout", "slow payment"),
         ("search", "finds orders"), ("search", "a and b")]


def chosen(expr: str) -> list[str]:
    m = compile_expr(expr)
    return [f"{s}/{t}" for s, t in TESTS if m(s, t)]


@pytest.mark.parametrize(("expr", "expected"), [
    ("order", ["checkout/Order is placed", "checkout/order is refunded", "search/finds orders"]),
    ("ORDER IS placed", ["checkout/Order is placed"]),  # case-insensitive; adjacent words form one term
    ("checkout and not slow", ["checkout/Order is placed", "checkout/order is refunded"]),
    ("refunded or search", ["checkout/order is refunded", "search/finds orders", "search/a and b"]),
    ("not (checkout or finds)", ["search/a and b"]),
    ('"a and b"', ["search/a and b"]),  # quoted: literal
    ("checkout/order*", ["checkout/Order is placed", "checkout/order is refunded"]),  # globs still work
    ("search", ["search/finds orders", "search/a and b"]),  # a suite name selects its tests
    ("*payment", ["checkout/slow payment"]),
    ("nothing", []),
])
def test_expressions(expr: str, expected: list[str]) -> None:
    assert chosen(expr) == expected


@pytest.mark.parametrize(("expr", "col"), [("a and", 6), ("(a", 3), ("", 1), ("a )", 3), ('"a', 1), ("or a", 1)])
def test_malformed_expressions_say_where(expr: str, col: int) -> None:
    with pytest.raises(SelectError) as e:
        compile_expr(expr)
    assert e.value.col == col


def test_repeated_expressions_select_the_union_and_exact_selects_one() -> None:
    m = matcher(["slow", "finds"])
    assert [t for s, t in TESTS if m(s, t)] == ["slow payment", "finds orders"]
    for s, t in TESTS:
        e = compile_expr(exact(s, t))
        assert [x for x in TESTS if e(*x)] == [(s, t)]
    e = compile_expr(exact("s", "a"))  # never a substring of a longer name
    assert not e("s", "ab") and e("s", "a")
    assert compile_expr(exact("s[1]", 'say "hi" * 2'))("s[1]", 'say "hi" * 2')


def test_closest_names() -> None:
    names = [f"{s}/{t}" for s, t in TESTS]
    assert closest(["refnded"], names)[0] == "checkout/order is refunded"
    assert closest(["zzzz"], names) == []


def crc(*args: str) -> int:
    with pytest.raises(SystemExit) as e:
        main(list(args))
    return int(e.value.code or 0)


SUITE = '''suite "shop" {
  service web { image "crc/busybox:dev" }

  test "The page is served" {
    step get = exec web ["true"]
  }

  test "argv is passed" {
    step a = exec web ["true"]
  }
}
'''


def test_crc_list_and_run_list(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                               capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "shop.cr").write_text(SUITE)
    assert crc("list", "shop.cr") == 0
    assert capsys.readouterr().out.splitlines() == [
        "shop.cr:1: suite shop", "shop.cr:4:   test shop/The page is served", "shop.cr:8:   test shop/argv is passed",
        "2 tests in 1 suite"]
    assert crc("run", "--list", "shop.cr", "-k", "page") == 0  # nothing runs
    assert capsys.readouterr().out.splitlines()[1:] == ["shop.cr:4:   test shop/The page is served",
                                                        "1 test in 1 suite"]
    (tmp_path / "crc.toml").write_text('paths = ["."]\n')  # no target: the config's paths
    assert crc("list", "-k", "not page") == 0
    assert "shop.cr:8:   test shop/argv is passed" in capsys.readouterr().out


def test_matching_nothing_names_the_closest_tests(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "shop.cr").write_text(SUITE)
    assert crc("run", "shop.cr", "-k", "pgae") == 2  # before the engine is even asked
    err = capsys.readouterr().err
    assert "crc: error: -k 'pgae' matched no test" in err
    assert "help: the closest: shop/The page is served" in err
    assert crc("list", "shop.cr", "-k", "page and") == 2
    err = capsys.readouterr().err
    assert "expected a name, found the end at column 9" in err and "Traceback" not in err
