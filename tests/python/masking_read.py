"""Reads a table through Airlock and prints what the client received, as JSON, for
tests/masking.rs to check: `pg CONNINFO TABLE` (psycopg, text and binary results) or
`mysql PORT USER PASSWORD TABLE` (PyMySQL, text protocol). Bytes are printed as latin-1 text."""

import json
import sys


def plain(v):
    if isinstance(v, (bytes, bytearray, memoryview)):
        return bytes(v).decode("latin-1")
    if isinstance(v, (dict, list)):
        return json.dumps(v)
    return v if v is None or isinstance(v, (int, str)) else str(v)


def pg(conninfo: str, table: str) -> dict:
    import psycopg

    out = {}
    with psycopg.connect(conninfo, autocommit=True) as conn:
        for binary in (False, True):
            with conn.cursor(binary=binary) as cur:
                cur.execute(f"select * from {table} order by id")
                out["binary" if binary else "text"] = [[plain(v) for v in row] for row in cur.fetchall()]
    return out


def mysql(port: str, user: str, password: str, table: str) -> dict:
    import pymysql

    conn = pymysql.connect(host="127.0.0.1", port=int(port), user=user, password=password,
                           database="test", autocommit=True)
    with conn.cursor() as cur:
        cur.execute(f"SELECT * FROM {table} ORDER BY id")
        rows = [[plain(v) for v in row] for row in cur.fetchall()]
    conn.close()
    return {"text": rows}


if __name__ == "__main__":
    if sys.argv[1] == "pg":
        result = pg(sys.argv[2], sys.argv[3])
    else:
        result = mysql(*sys.argv[2:6])
    print(json.dumps(result))
