//! The database, the source of truth, and the progress cache in front of it: the SQL of
//! batches ([`batches`]), of item changes ([`items`]), and the cache ([`cache`]). Accounts keep
//! their own queries beside their rules (`access::accounts`).
//!
//! The store speaks to SQLite (the embedded default) and PostgreSQL through sqlx's `Any`
//! driver, with one schema and one set of queries for both (text ids, integer times, `$n`
//! placeholders, `RETURNING`), so choosing a database is a matter of `DATABASE_URL` and no
//! caller knows which one it got. Queries are checked at run time: the build needs no database.

pub mod batches;
pub mod cache;
pub mod items;

use std::{
    ops::{Deref, DerefMut},
    path::Path,
    str::FromStr,
    sync::Arc,
    time::Duration,
};

use batchwatch_core::{BatchProgress, BatchSummary, Millis};
use sqlx::{
    AnyConnection, AnyPool, Executor, FromRow, Row,
    any::{AnyConnectOptions, AnyPoolOptions},
};
use tokio::sync::{Mutex, OwnedMutexGuard};

use crate::error::{Error, Result};

const SUMMARY_COLUMNS: &str = "id, name, status, percent, queued, processing, completed, failed, cancelled, total, seq, \
                               created_at, updated_at";
const ITEM_COLUMNS: &str = "id, name, status, error, attempts, position, updated_at";

/// Rows per multi-row `INSERT`: 5 parameters each stays far below SQLite's and PostgreSQL's
/// limits on bound parameters.
const INSERT_CHUNK: usize = 1_000;

#[derive(Clone, Debug)]
pub struct Store {
    pool: AnyPool,
    postgres: bool,
    /// SQLite's one writer, as this process's turns (`None` on PostgreSQL): see [`Store::begin`].
    writer: Option<Arc<Mutex<()>>>,
}

/// Changes of one batch, written in a transaction not yet committed, one change event each
/// (the batch after it, with the items that changed): the caller commits when it is ready to
/// announce them, so that commits and announcements happen in the same order.
pub struct Uncommitted {
    tx: Tx,
    /// The batch's owner (`""` for a batch made before accounts), whose pages hear of it.
    owner: String,
    changes: Vec<BatchProgress>,
}

impl Uncommitted {
    /// Commits; returns the batch's owner and its change events.
    pub async fn commit(self) -> Result<(String, Vec<BatchProgress>)> {
        self.tx.commit().await?;
        Ok((self.owner, self.changes))
    }
}

impl Store {
    /// Connects (creating a SQLite file and its folder when missing) and runs the migrations.
    pub async fn connect(url: &str, max_connections: u32) -> Result<Self> {
        sqlx::any::install_default_drivers();
        let url = prepare_sqlite(url).await?;
        let options = AnyConnectOptions::from_str(&url)?;
        let sqlite = url.starts_with("sqlite:");
        let pool = AnyPoolOptions::new()
            .max_connections(max_connections)
            .acquire_timeout(Duration::from_secs(10))
            .after_connect(move |conn, _meta| {
                Box::pin(async move {
                    if sqlite {
                        // WAL lets pages read while a worker writes; NORMAL sync is safe with WAL.
                        conn.execute("PRAGMA journal_mode = WAL; PRAGMA synchronous = NORMAL; PRAGMA foreign_keys = ON; PRAGMA busy_timeout = 10000").await?;
                    }
                    Ok(())
                })
            })
            .connect_with(options)
            .await?;
        sqlx::migrate!().run(&pool).await?;
        let writer = sqlite.then(Arc::default);
        Ok(Self { pool, postgres: url.starts_with("postgres"), writer })
    }

    /// Begins a write. SQLite takes one writer at a time, and a writer that finds the lock
    /// taken sleeps in its busy handler (1 ms, then longer, up to 100 ms a try) and may lose
    /// the race again on waking: under several concurrent writers some waited over a second.
    /// This process's writers take turns instead, in the order they came (tokio's mutex is
    /// fair), and the lock is found free. Other processes on the same file still meet the busy
    /// handler. PostgreSQL locks rows, not the database: its writers run together.
    async fn begin(&self) -> Result<Tx> {
        let turn = match &self.writer {
            Some(writer) => Some(writer.clone().lock_owned().await),
            None => None,
        };
        Ok(Tx { tx: self.pool.begin().await?, _turn: turn })
    }

    /// Whether the database answers (`GET /ready`).
    pub async fn ping(&self) -> Result<()> {
        sqlx::query("SELECT 1").execute(&self.pool).await?;
        Ok(())
    }

    /// The users and tokens kept in the same database.
    pub fn accounts(&self) -> crate::access::accounts::Accounts {
        crate::access::accounts::Accounts::new(self.pool.clone())
    }
}

/// `$first, $first+1, …`: `count` placeholders.
fn placeholders(first: usize, count: usize) -> String {
    (first..first + count).map(|n| format!("${n}")).collect::<Vec<_>>().join(", ")
}

type AnyQuery<'q> = sqlx::query::Query<'q, sqlx::Any, sqlx::any::AnyArguments<'q>>;

/// Binds what follows from a batch's counts, in the order every write of it lists the columns:
/// `status, percent, queued, processing, completed, failed, cancelled`.
fn bind_state<'q>(query: AnyQuery<'q>, summary: &BatchSummary) -> AnyQuery<'q> {
    let counts = summary.counts;
    query
        .bind(summary.status.as_str())
        .bind(i64::from(summary.percent))
        .bind(i64::from(counts.queued))
        .bind(i64::from(counts.processing))
        .bind(i64::from(counts.completed))
        .bind(i64::from(counts.failed))
        .bind(i64::from(counts.cancelled))
}

/// A write transaction, holding this process's turn to write on SQLite until it ends.
struct Tx {
    tx: sqlx::Transaction<'static, sqlx::Any>,
    _turn: Option<OwnedMutexGuard<()>>,
}

impl Tx {
    async fn commit(self) -> Result<()> {
        Ok(self.tx.commit().await?)
    }
}

impl Deref for Tx {
    type Target = AnyConnection;
    fn deref(&self) -> &AnyConnection {
        &self.tx
    }
}

impl DerefMut for Tx {
    fn deref_mut(&mut self) -> &mut AnyConnection {
        &mut self.tx
    }
}

/// Opens a change of a batch: `seq` + 1 and its time, returning its owner and the summary
/// before the change (`None` when there is no such batch). An UPDATE comes first: on PostgreSQL it locks the
/// batch's row until commit, so two changes of one batch cannot both read the same counts and
/// lose one of the updates (a plain SELECT would; SQLite serializes writers anyway).
async fn next_seq(tx: &mut Tx, batch_id: &str, now: Millis) -> Result<Option<(String, BatchSummary)>> {
    let row = sqlx::query(&format!(
        "UPDATE batches SET seq = seq + 1, updated_at = $1 WHERE id = $2 \
         RETURNING COALESCE(owner_id, '') AS owner, {SUMMARY_COLUMNS}"
    ))
    .bind(now)
    .bind(batch_id)
    .fetch_optional(&mut **tx)
    .await?;
    let Some(row) = row else { return Ok(None) };
    Ok(Some((row.try_get("owner")?, BatchSummary::from_row(&row)?)))
}

/// Writes what a change did to a batch's counts (and the status and percent that follow).
async fn save_counts(tx: &mut Tx, batch_id: &str, summary: &BatchSummary) -> Result<()> {
    let update = sqlx::query(
        "UPDATE batches SET status = $1, percent = $2, queued = $3, processing = $4, completed = $5, \
         failed = $6, cancelled = $7, total = $8 WHERE id = $9",
    );
    bind_state(update, summary)
        .bind(i64::from(summary.counts.total))
        .bind(batch_id)
        .execute(&mut **tx)
        .await?;
    Ok(())
}

/// For a SQLite URL: creates the file's folder and asks sqlx to create the file.
async fn prepare_sqlite(url: &str) -> Result<String> {
    let Some(rest) = url.strip_prefix("sqlite://").or_else(|| url.strip_prefix("sqlite:")) else {
        return Ok(url.to_owned());
    };
    let (path, query) = rest.split_once('?').unwrap_or((rest, ""));
    if path.is_empty() || path == ":memory:" {
        return Ok(url.to_owned());
    }
    if let Some(dir) = Path::new(path).parent().filter(|d| !d.as_os_str().is_empty()) {
        tokio::fs::create_dir_all(dir).await.map_err(|e| Error::Database(sqlx::Error::Io(e)))?;
    }
    if query.split('&').any(|kv| kv.starts_with("mode=")) {
        Ok(url.to_owned())
    } else {
        let sep = if query.is_empty() { "?" } else { "&" };
        Ok(format!("{url}{sep}mode=rwc"))
    }
}
