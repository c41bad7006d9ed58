"""PyMySQL and mysql-connector-python through Airlock's MySQL listener: text and prepared
statements, several result sets, transactions, errors with their numbers, and a policy refusal
(ERR 1142) that leaves the connection usable. Run by tests/my_python.rs with host, port, user,
password and a table name (made directly in MariaDB, three rows); exits non-zero on the first
failed check."""

import sys

import mysql.connector
import pymysql


def check_pymysql(host: str, port: int, user: str, password: str, table: str) -> None:
    conn = pymysql.connect(host=host, port=port, user=user, password=password, database="test",
                           client_flag=pymysql.constants.CLIENT.MULTI_STATEMENTS, autocommit=True)
    with conn.cursor() as cur:
        cur.execute("SELECT %s + 1, %s", (41, "héllo"))
        assert cur.fetchone() == (42, "héllo")
        cur.execute(f"SELECT id, v FROM {table} WHERE id <= %s ORDER BY id", (2,))
        assert cur.fetchall() == ((1, "a"), (2, "b"))
        # Several result sets from one statement string.
        cur.execute("SELECT 1; SELECT 2, 3")
        assert cur.fetchall() == ((1,),)
        assert cur.nextset()
        assert cur.fetchall() == ((2, 3),)
        # MariaDB's own error, with its number.
        try:
            cur.execute("SELECT * FROM surely_missing_table")
            raise AssertionError("missing table not reported")
        except pymysql.err.ProgrammingError as e:
            assert e.args[0] == 1146, e.args
        # Airlock's refusal.
        try:
            cur.execute(f"DELETE FROM {table}")
            raise AssertionError("DELETE without WHERE was not refused")
        except pymysql.err.OperationalError as e:
            assert e.args[0] == 1142, e.args
            assert "everything-else-needs-a-dba" in e.args[1], e.args
        cur.execute(f"SELECT count(*) FROM {table}")
        assert cur.fetchone() == (3,)
        # A transaction carries on past a refusal, as past any MySQL error.
        conn.begin()
        cur.execute(f"UPDATE {table} SET v = 'z' WHERE id = 1")
        try:
            cur.execute(f"TRUNCATE TABLE {table}")
        except pymysql.err.OperationalError as e:
            assert e.args[0] == 1142, e.args
        conn.commit()
        cur.execute(f"SELECT v FROM {table} WHERE id = 1")
        assert cur.fetchone() == ("z",)
    conn.close()


def check_connector(host: str, port: int, user: str, password: str, table: str) -> None:
    conn = mysql.connector.connect(host=host, port=port, user=user, password=password,
                                   database="test", ssl_disabled=True, use_pure=False)
    # Server-side prepared statements (binary protocol), run several times.
    cur = conn.cursor(prepared=True)
    cur.execute(f"SELECT v FROM {table} WHERE id = %s", (2,))
    assert cur.fetchall() == [("b",)], cur
    cur.execute(f"SELECT v FROM {table} WHERE id = %s", (3,))
    assert cur.fetchall() == [("c",)]
    # A prepared DELETE is judged when it runs.
    try:
        cur.execute(f"DELETE FROM {table} WHERE 1 = %s", (1,))
        raise AssertionError("prepared DELETE without a column condition was not refused")
    except mysql.connector.errors.Error as e:
        assert e.errno == 1142, e
    plain = conn.cursor()
    plain.execute(f"SELECT count(*) FROM {table}")
    assert plain.fetchall() == [(3,)]
    plain.execute("SELECT VERSION()")
    assert "MariaDB" in plain.fetchall()[0][0]
    conn.close()


def main() -> None:
    host, port, user, password, table = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4], sys.argv[5]
    check_pymysql(host, port, user, password, table)
    check_connector(host, port, user, password, table)
    print("mysql clients: all checks passed")


if __name__ == "__main__":
    main()
