//! The PostgreSQL the tests use: the server scripts/postgres-up starts on
//! loopback, whose URL is in `SCRIPTBOX_TEST_POSTGRES`. Each test makes a
//! database of its own there, so tests never see each other's runs.

use std::process::Command;

/// The URL of the test server (a panic naming the fix when unset: these
/// tests are never skipped).
pub fn server_url() -> String {
    let url = std::env::var("SCRIPTBOX_TEST_POSTGRES").unwrap_or_else(|_| {
        panic!(
            "SCRIPTBOX_TEST_POSTGRES is not set: run `export SCRIPTBOX_TEST_POSTGRES=$(scripts/postgres-up)` (scripts/test does)"
        )
    });
    // psql takes anything else for a database name on the local socket,
    // which fails far from the cause.
    assert!(
        url.starts_with("postgres://") && !url.contains(char::is_whitespace),
        "SCRIPTBOX_TEST_POSTGRES is {url:?}: expected one postgres:// URL (scripts/postgres-up prints it)"
    );
    url
}

/// The directory of the PostgreSQL server binaries (psql, initdb, pg_ctl).
pub fn bin_dir() -> std::path::PathBuf {
    let mut dirs: Vec<_> = std::fs::read_dir("/usr/lib/postgresql")
        .expect("PostgreSQL is installed (scripts/postgres-up installs it)")
        .flatten()
        .map(|e| e.path().join("bin"))
        .filter(|p| p.join("psql").exists())
        .collect();
    dirs.sort_by_key(|p| {
        p.parent()
            .and_then(|v| v.file_name())
            .and_then(|v| v.to_str())
            .and_then(|v| v.parse::<u32>().ok())
            .unwrap_or(0)
    });
    dirs.pop()
        .expect("a PostgreSQL version under /usr/lib/postgresql")
}

/// `url` with its database replaced by `db`.
pub fn with_database(url: &str, db: &str) -> String {
    let (base, _) = url.rsplit_once('/').expect("a URL with a database");
    format!("{base}/{db}")
}

/// Runs `sql` on the database at `url` with psql; its rows, one a line,
/// columns separated by `|`.
pub fn psql(url: &str, sql: &str) -> String {
    let out = Command::new(bin_dir().join("psql"))
        .args(["-qtAX", "-v", "ON_ERROR_STOP=1", "-d", url, "-c", sql])
        .output()
        .expect("psql runs");
    assert!(
        out.status.success(),
        "psql -d {url} -c {sql}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap().trim().to_string()
}

/// A new, empty database on the test server; its URL.
pub fn fresh_database() -> String {
    let url = server_url();
    let name = format!("sbx_test_{}", uuid::Uuid::new_v4().simple());
    psql(&url, &format!("CREATE DATABASE {name}"));
    with_database(&url, &name)
}
