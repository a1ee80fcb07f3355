//! Test support for the origin's integration tests, its benchmarks and the `edgefront` binary's
//! tests: the PostgreSQL server the test command starts, and a fresh database on it per caller.

use crate::store::StoreError;

/// The server URL tests use (`EDGEFRONT_TEST_PG_URL`, printed by `tests/pg/ensure.sh`), or
/// `Ok(None)` when none is configured and PostgreSQL tests may be skipped. With
/// `EDGEFRONT_REQUIRE_PG` set (the test command sets it) a missing server is an error instead,
/// so those tests fail rather than pass silently.
pub fn postgres_server() -> Result<Option<String>, String> {
    match std::env::var("EDGEFRONT_TEST_PG_URL") {
        Ok(url) => Ok(Some(url)),
        Err(_) if std::env::var("EDGEFRONT_REQUIRE_PG").is_ok() => {
            Err("EDGEFRONT_REQUIRE_PG is set but EDGEFRONT_TEST_PG_URL is not".into())
        }
        Err(_) => Ok(None),
    }
}

/// Creates an empty database named `{prefix}_{random}` on `server` and returns its URL.
pub async fn create_database(server: &str, prefix: &str) -> Result<String, StoreError> {
    use sqlx::Connection as _;
    sqlx::any::install_default_drivers();
    let name = format!("{prefix}_{}", uuid::Uuid::new_v4().simple());
    let mut admin = sqlx::AnyConnection::connect(&format!("{server}/postgres")).await?;
    sqlx::query(&format!("CREATE DATABASE {name}"))
        .execute(&mut admin)
        .await?;
    admin.close().await?;
    Ok(format!("{server}/{name}"))
}
