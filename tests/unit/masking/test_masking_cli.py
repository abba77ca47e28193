"""plugwatch mask: JSON lines in, masked JSON lines out, invalid lines reported and skipped."""

from __future__ import annotations

import io

import orjson

from plugwatch.masking.cli import mask_main


def _run(data: bytes, *args: str) -> tuple[int, bytes, str]:
    out, err = io.BytesIO(), io.StringIO()
    code = mask_main(list(args), stdin=io.BytesIO(data), stdout=out, stderr=err)
    return code, out.getvalue(), err.getvalue()


def test_masks_each_line_keeping_shape() -> None:
    lines = [
        {"tenant_id": "t", "message": "mail bob@example.com", "n": [1, {"password": "x"}]},
        {"a": "nothing here", "b": None},
    ]
    data = b"".join(orjson.dumps(x) + b"\n" for x in lines)
    code, out, err = _run(data)
    assert code == 0 and err == ""
    got = [orjson.loads(x) for x in out.splitlines()]
    assert got == [{"tenant_id": "t", "message": "mail [MASKED:email]", "n": [1, {"password": "[MASKED:password]"}]},
                   {"a": "nothing here", "b": None}]


def test_invalid_lines_are_reported_and_skipped() -> None:
    data = b'{"ok": 1}\n{"broken": \n\n[1, 2]\n{"secret": "s3cr3t"}\r\n'
    code, out, err = _run(data)
    assert code == 0
    assert out.splitlines() == [b'{"ok":1}', b'{"secret":"[MASKED:secret]"}']
    assert "line 2:" in err and "not valid JSON" in err
    assert "line 4:" in err and "one JSON object per line" in err
    assert "s3cr3t" not in err and b"broken" not in out
    strict, _, _ = _run(data, "--strict")
    assert strict == 1


def test_stats_go_to_stderr() -> None:
    code, out, err = _run(b'{"m": "13800138000 and bob@example.com"}\n', "--stats")
    assert code == 0 and b"[MASKED:phone:****8000]" in out
    assert "email" in err and "phone" in err and "violations: 0" in err
    assert "events/s" in err and "MB/s" in err


def test_rules_and_key_options(tmp_path) -> None:
    code, _, err = _run(b"{}\n", "--rules", str(tmp_path / "missing.yaml"))
    assert code == 2 and "missing.yaml" in err and "--rules" in err
    bad = tmp_path / "bad.yaml"
    bad.write_text("key_rules: [{type: x, keys: [a], style: loud}]\n", encoding="utf-8")
    code, _, err = _run(b"{}\n", "--rules", str(bad))
    assert code == 2 and "loud" in err
    one = _run(b'{"session": "abc"}\n', "--key", "k1")[1]
    two = _run(b'{"session": "abc"}\n', "--key", "k2")[1]
    assert one != two and b"abc" not in one


def test_text_streams_work_too() -> None:
    out, err = io.StringIO(), io.StringIO()
    code = mask_main([], stdin=io.StringIO('{"m": "用户手机号13800138000"}\n'), stdout=out, stderr=err)
    assert code == 0 and out.getvalue() == '{"m":"用户手机号[MASKED:phone:****8000]"}\n'


def test_help_mentions_key_default(capsys) -> None:
    assert mask_main(["--help"]) == 0
    assert "PLUGWATCH_MASKING_KEY" in capsys.readouterr().out
