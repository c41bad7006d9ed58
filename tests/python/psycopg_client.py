"""psycopg 3 through Airlock: server-side parameters, binary results, pipeline mode, COPY both
ways, notices, LISTEN/NOTIFY, errors with SQLSTATE, ParameterStatus. Run by tests/pg_python.rs
with the connection string as the only argument; exits non-zero on the first failed check."""

import sys

import psycopg
from psycopg import errors


def main(conninfo: str) -> None:
    with psycopg.connect(conninfo, autocommit=True) as conn:
        # Extended protocol with server-side binding, text and binary results.
        row = conn.execute("select %s::int + 1, %s::text, %s::bytea", (41, "héllo", b"\x00\xff")).fetchone()
        assert row == (42, "héllo", b"\x00\xff"), row
        with conn.cursor(binary=True) as cur:
            cur.execute("select %s::int8 * 2, %s::numeric, array[1,2,3]", (21, "1.5"))
            r = cur.fetchone()
            assert r[0] == 42 and str(r[1]) == "1.5" and r[2] == [1, 2, 3], r

        # Pipeline mode: many statements in flight; one error does not poison later syncs.
        conn.execute("create temp table items (id int primary key, name text)")
        with conn.pipeline():
            with conn.cursor() as cur:
                cur.executemany("insert into items values (%s, %s)", [(i, f"item {i}") for i in range(500)])
        assert conn.execute("select count(*) from items").fetchone()[0] == 500
        try:
            with conn.pipeline():
                conn.execute("insert into items values (1, 'duplicate')")
                conn.execute("select 1")
            raise AssertionError("duplicate key not reported")
        except errors.UniqueViolation as e:
            assert e.diag.sqlstate == "23505", e.diag.sqlstate
        assert conn.execute("select 'still usable'").fetchone()[0] == "still usable"

        # COPY in and out.
        with conn.cursor() as cur:
            with cur.copy("copy items (id, name) from stdin") as copy:
                for i in range(1000, 6000):
                    copy.write_row((i, f"copied {i}"))
            out = bytearray()
            with cur.copy("copy (select id, name from items where id >= 1000 order by id) to stdout") as copy:
                for chunk in copy:
                    out += chunk
        lines = bytes(out).decode().splitlines()
        assert len(lines) == 5000 and lines[0] == "1000\tcopied 1000", lines[:2]

        # Errors keep their SQLSTATE.
        try:
            conn.execute("select * from surely_missing_table")
            raise AssertionError("no error")
        except errors.UndefinedTable as e:
            assert e.diag.sqlstate == "42P01"

        # Notices and ParameterStatus.
        notices = []
        conn.add_notice_handler(lambda d: notices.append(d.message_primary))
        conn.execute("do $$ begin raise notice 'psycopg notice'; end $$")
        assert notices == ["psycopg notice"], notices
        conn.execute("set application_name = 'psycopg-through-airlock'")
        assert conn.info.parameter_status("application_name") == "psycopg-through-airlock"
        assert conn.info.parameter_status("server_version"), "server_version relayed at start-up"

        # LISTEN/NOTIFY across two connections.
        conn.execute("listen airlock_py")
        with psycopg.connect(conninfo, autocommit=True) as other:
            other.execute("notify airlock_py, 'from psycopg'")
        gen = conn.notifies(timeout=10, stop_after=1)
        got = [n.payload for n in gen]
        assert got == ["from psycopg"], got

    # Wrong password: the proper error class.
    try:
        psycopg.connect(conninfo.replace("password=", "password=x"))
        raise AssertionError("wrong password accepted")
    except psycopg.OperationalError as e:
        assert "password authentication failed" in str(e), str(e)

    print("psycopg: all checks passed")


if __name__ == "__main__":
    main(sys.argv[1])
