"""The PostgreSQL fixtures work: a fresh database per test on a server of version 13 or later."""

from contextlib import closing

import psycopg2


def test_each_test_gets_a_fresh_writable_database(postgres_credentials):
    with closing(psycopg2.connect(postgres_credentials)) as connection, connection.cursor() as cur:
        cur.execute("SHOW server_version_num")
        assert int(cur.fetchone()[0]) >= 130000
        cur.execute("SELECT current_database()")
        assert cur.fetchone()[0] == postgres_credentials.rsplit("/", 1)[1]
        cur.execute("SELECT count(*) FROM pg_tables WHERE schemaname = 'public'")
        assert cur.fetchone()[0] == 0
        cur.execute("CREATE TABLE orders (id int PRIMARY KEY, note text)")
        cur.execute("INSERT INTO orders VALUES (1, 'late checkout')")
        connection.commit()
        cur.execute("SELECT id, note FROM orders")
        assert cur.fetchall() == [(1, "late checkout")]
