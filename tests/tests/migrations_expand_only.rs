//! Expand/contract, checked on the files: a migration only adds what the
//! previous release ignores (README, Upgrades). A statement that breaks the
//! previous release's binaries, which run against the new schema during a
//! rolling upgrade, is refused here unless its file is in [`CONTRACTS`],
//! with the release that contracts and why that release's predecessor no
//! longer uses what it removes.

use std::path::PathBuf;

/// Migration files allowed to contract, with the release and the reason.
/// Empty: no migration so far removes or changes anything.
const CONTRACTS: &[(&str, &str)] = &[];

/// What in `sql` would break a binary of the previous release, one line each.
fn contract_breaking(sql: &str) -> Vec<String> {
    let without_comments: String = sql
        .lines()
        .map(|l| l.split("--").next().unwrap_or(""))
        .collect::<Vec<_>>()
        .join(" ");
    let mut found = Vec::new();
    for statement in without_comments.split(';') {
        let s = statement
            .split_whitespace()
            .collect::<Vec<_>>()
            .join(" ")
            .to_uppercase();
        if s.is_empty() {
            continue;
        }
        let mut why = Vec::new();
        for (pattern, what) in [
            ("DROP TABLE", "drops a table"),
            ("DROP COLUMN", "drops a column"),
            ("RENAME ", "renames"),
            ("SET NOT NULL", "makes a column NOT NULL"),
            ("TRUNCATE", "empties a table"),
        ] {
            if s.contains(pattern) {
                why.push(what);
            }
        }
        for clause in s.split("ALTER COLUMN").skip(1) {
            let clause = clause.split(',').next().unwrap_or("");
            if clause.contains(" TYPE ") {
                why.push("changes a column's type");
            }
        }
        for clause in s.split("ADD COLUMN").skip(1) {
            let clause = clause.split(',').next().unwrap_or("");
            if clause.contains("NOT NULL") && !clause.contains("DEFAULT") {
                why.push("adds a NOT NULL column without a default (old INSERTs fail)");
            }
        }
        for what in why {
            found.push(format!("{what}: {s}"));
        }
    }
    found
}

#[test]
fn every_migration_only_expands_unless_listed_as_a_contract() {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../migrations");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .expect("migrations/")
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "sql"))
        .collect();
    files.sort();
    assert!(files.len() > 10, "found only {files:?}");
    let mut refused = Vec::new();
    for file in &files {
        let name = file.file_name().unwrap().to_str().unwrap();
        let found = contract_breaking(&std::fs::read_to_string(file).unwrap());
        let listed = CONTRACTS.iter().any(|(f, _)| *f == name);
        if !found.is_empty() && !listed {
            refused.push(format!("{name}:\n  {}", found.join("\n  ")));
        }
    }
    assert!(
        refused.is_empty(),
        "contract-breaking migrations (split them: expand now, contract a release later, \
         and list the contracting file in CONTRACTS):\n{}",
        refused.join("\n")
    );
    for (listed, _) in CONTRACTS {
        assert!(
            files.iter().any(|f| f.file_name().unwrap() == *listed),
            "CONTRACTS names {listed}, which is not a migration"
        );
    }
}

#[test]
fn the_lint_catches_each_kind_of_contract() {
    for bad in [
        "DROP TABLE outbox;",
        "ALTER TABLE outbox DROP COLUMN parked_at;",
        "alter table outbox rename column game_id to game;",
        "ALTER TABLE t RENAME TO u;",
        "ALTER TABLE outbox ALTER COLUMN game_seq TYPE integer;",
        "ALTER TABLE outbox ALTER COLUMN game_id SET NOT NULL;",
        "ALTER TABLE outbox ADD COLUMN x text NOT NULL;",
        "ALTER TABLE outbox ADD COLUMN a int, ADD COLUMN x text\n  NOT NULL;",
    ] {
        assert!(!contract_breaking(bad).is_empty(), "not caught: {bad}");
    }
    for good in [
        "CREATE TABLE t (a text NOT NULL);",
        "ALTER TABLE outbox ADD COLUMN refusals integer NOT NULL DEFAULT 0, ADD COLUMN p timestamptz;",
        "-- DROP TABLE outbox in a comment\nCREATE INDEX i ON t (a);",
        "ALTER TABLE t ALTER COLUMN a SET DEFAULT 0;",
    ] {
        assert_eq!(contract_breaking(good), Vec::<String>::new(), "{good}");
    }
}
