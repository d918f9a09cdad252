//! Versioned schema migrations, embedded in the binary: each is a SQL file
//! `migrations/<db>/NNNN_name.sql`, applied in order by sqlx's migrator,
//! which records what it applied (with a checksum) in the database.

use std::borrow::Cow;

use futures_util::future::BoxFuture;
use sqlx::error::BoxDynError;
use sqlx::migrate::{Migration, MigrationSource, MigrationType, Migrator};

/// The SQLite migrations, oldest first: (version, description, SQL).
const SQLITE: &[(i64, &str, &str)] = &[
    (1, "init", include_str!("migrations/sqlite/0001_init.sql")),
    (
        2,
        "callbacks",
        include_str!("migrations/sqlite/0002_callbacks.sql"),
    ),
];

/// The PostgreSQL migrations, oldest first.
const POSTGRES: &[(i64, &str, &str)] = &[
    (1, "init", include_str!("migrations/postgres/0001_init.sql")),
    (
        2,
        "callbacks",
        include_str!("migrations/postgres/0002_callbacks.sql"),
    ),
];

/// A fixed list of migrations compiled into the binary.
#[derive(Debug)]
struct Embedded(&'static [(i64, &'static str, &'static str)]);

impl<'s> MigrationSource<'s> for Embedded {
    fn resolve(self) -> BoxFuture<'s, Result<Vec<Migration>, BoxDynError>> {
        Box::pin(async move {
            Ok(self
                .0
                .iter()
                .map(|(version, name, sql)| {
                    Migration::new(
                        *version,
                        Cow::Borrowed(*name),
                        MigrationType::Simple,
                        Cow::Borrowed(*sql),
                        false,
                    )
                })
                .collect())
        })
    }
}

/// Brings a SQLite database up to the newest schema.
pub async fn sqlite(pool: &sqlx::SqlitePool) -> Result<(), sqlx::migrate::MigrateError> {
    Migrator::new(Embedded(SQLITE)).await?.run(pool).await
}

/// Brings a PostgreSQL database up to the newest schema. sqlx's migrator
/// holds an advisory lock while it works, so nodes starting together
/// migrate once.
pub async fn postgres(pool: &sqlx::PgPool) -> Result<(), sqlx::migrate::MigrateError> {
    Migrator::new(Embedded(POSTGRES)).await?.run(pool).await
}
