//! The migrator against a real database: applies in order, records
//! checksums, is idempotent, and refuses edited or vanished history.

use std::path::PathBuf;

struct TempDb {
    name: String,
}

impl TempDb {
    fn new() -> Self {
        let mut b = [0u8; 4];
        getrandom::fill(&mut b).unwrap();
        let name = format!("cpt_mig_{:02x}{:02x}{:02x}{:02x}", b[0], b[1], b[2], b[3]);
        migrator::admin::provision(&name, "pw").unwrap();
        Self { name }
    }
    fn url(&self) -> String {
        migrator::admin::url(&self.name, "pw", "127.0.0.1", 5432)
    }
}

impl Drop for TempDb {
    fn drop(&mut self) {
        let _ = migrator::admin::drop(&self.name);
    }
}

fn dir(files: &[(&str, &str)]) -> PathBuf {
    let mut b = [0u8; 4];
    getrandom::fill(&mut b).unwrap();
    let d = std::env::temp_dir().join(format!("mig-{}", u32::from_le_bytes(b)));
    std::fs::create_dir_all(&d).unwrap();
    for (n, s) in files {
        std::fs::write(d.join(n), s).unwrap();
    }
    d
}

#[test]
fn migrations_apply_once_in_order_and_edited_history_is_refused() {
    let db = TempDb::new();
    let d = dir(&[
        ("0001_create_a.sql", "CREATE TABLE a (id int PRIMARY KEY);"),
        ("0002_add_b.sql", "ALTER TABLE a ADD COLUMN b text;"),
    ]);
    assert_eq!(
        migrator::migrate(&db.url(), &d).unwrap(),
        vec!["0001_create_a.sql", "0002_add_b.sql"]
    );
    assert!(
        migrator::migrate(&db.url(), &d).unwrap().is_empty(),
        "a second run applies nothing"
    );
    let status = migrator::status(&db.url(), &d).unwrap();
    assert!(status.iter().all(|s| s.applied));

    std::fs::write(d.join("0003_add_c.sql"), "ALTER TABLE a ADD COLUMN c text;").unwrap();
    assert!(!migrator::status(&db.url(), &d).unwrap()[2].applied);
    assert_eq!(
        migrator::migrate(&db.url(), &d).unwrap(),
        vec!["0003_add_c.sql"]
    );

    std::fs::write(
        d.join("0002_add_b.sql"),
        "ALTER TABLE a ADD COLUMN b integer;",
    )
    .unwrap();
    let err = migrator::migrate(&db.url(), &d).unwrap_err();
    assert!(
        matches!(err, migrator::Error::Edited { version: 2, .. }),
        "{err}"
    );
    assert!(migrator::status(&db.url(), &d).is_err());

    std::fs::remove_file(d.join("0002_add_b.sql")).unwrap();
    assert!(matches!(
        migrator::migrate(&db.url(), &d).unwrap_err(),
        migrator::Error::Missing(2)
    ));
}

#[test]
fn a_failing_migration_is_rolled_back_and_not_recorded() {
    let db = TempDb::new();
    let d = dir(&[
        ("0001_create_a.sql", "CREATE TABLE a (id int PRIMARY KEY);"),
        (
            "0002_broken.sql",
            "CREATE TABLE b (id int); SELECT no_such_function();",
        ),
    ]);
    assert!(matches!(
        migrator::migrate(&db.url(), &d).unwrap_err(),
        migrator::Error::Failed { .. }
    ));
    let mut c = postgres::Client::connect(&db.url(), postgres::NoTls).unwrap();
    let recorded: i64 = c
        .query_one("SELECT count(*) FROM schema_migrations", &[])
        .unwrap()
        .get(0);
    assert_eq!(recorded, 1);
    let b_exists: bool = c
        .query_one("SELECT to_regclass('b') IS NOT NULL", &[])
        .unwrap()
        .get(0);
    assert!(!b_exists, "the failed migration left nothing behind");
}
