//! The server is the oracle for splitting: each string is sent to PostgreSQL as one simple
//! Query, and the number of CommandComplete messages it answers with must equal the number of
//! statements Airlock's splitter finds.

mod common;

use airlock::sql::Dialect;
use airlock::sql::split::split;
use tokio_postgres::SimpleQueryMessage;

const CASES: &[&str] = &[
    "select 1; select 2",
    "select ';' ; select 2;",
    "select 'it''s;'; select 2",
    r"select E'\';'; select 2",
    r"select E'\\'; select 2",
    r#"select 1 as "a;b"; select 2"#,
    r#"select 1 as "x"";y"; select 2"#,
    "select $$;$$; select $t$ ; $ $t$",
    "select $a$ $b$ ; $b$ $a$; select 2",
    "select 1 /* ; /* nested ; */ ; */; select 2",
    "select 1 -- ; not a split\n; select 2",
    ";; select 1 ;; -- only a comment\n;",
    r"select U&'d\0061t\+000061;' as data; select 2",
    r#"select U&"a;b" from (select 1 as "a;b") t; select 2"#,
    "select 1 as x$y; select 2",
    "select case when true then ';' end; select 2",
    "create function pg_temp.split_f() returns int language sql begin atomic select 1; select 2; end; select pg_temp.split_f()",
    "create function pg_temp.split_g() returns int language sql begin atomic select case when true then 1 end; end; select 3",
    "begin; select 1; commit",
    "select 'ünï;cødé'; select '日本;'",
    "select (array[1,2])[1]; select '{\"a\":\";\"}'::jsonb",
    "select 1\n;\nselect 2\n;\n",
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn split_agrees_with_postgresql() {
    for sql in CASES {
        let client = common::direct().await;
        let answers = client
            .simple_query(sql)
            .await
            .unwrap_or_else(|e| panic!("the server refused {sql:?}: {}", common::text(&e)));
        let server = answers
            .iter()
            .filter(|m| matches!(m, SimpleQueryMessage::CommandComplete(_)))
            .count();
        let ours = split(sql, Dialect::Postgres).unwrap_or_else(|e| panic!("{sql:?}: {e}"));
        assert_eq!(ours.len(), server, "{sql:?} split into {ours:?}");
    }
}
