//! Comparing a replay's rows with the live ones, row by row.

use super::*;

/// One row that differs between the live read models and a replay.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Difference {
    /// The projection.
    pub projection: String,
    /// The row.
    pub row_key: String,
    /// What differs.
    pub what: DifferenceKind,
}

/// How a row differs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DifferenceKind {
    /// Only the live table has it.
    OnlyLive,
    /// Only the replay has it.
    OnlyReplay,
    /// Both have it, with different contents.
    Changed,
}

impl std::fmt::Display for Difference {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let what = match self.what {
            DifferenceKind::OnlyLive => "only in the live table (the replay has no such row)",
            DifferenceKind::OnlyReplay => "missing from the live table (the replay has it)",
            DifferenceKind::Changed => "differs between the live table and the replay",
        };
        write!(f, "{}: row '{}' {what}", self.projection, self.row_key)
    }
}

/// Compares a projection's live rows with its replayed rows, provided the live checkpoint is
/// `expected` (read in the same snapshot as the rows). `None` when the live projection has
/// moved on since: replay up to its new checkpoint and compare again.
pub async fn compare(
    store: &Store,
    projection: &str,
    expected: Checkpoint,
) -> Result<Option<Vec<Difference>>, sqlx::Error> {
    const ONE_SIDED: &str = "SELECT row_key FROM (
            SELECT row_key, kind, scope, sort_key, doc FROM {a} WHERE projection = $1
            EXCEPT
            SELECT row_key, kind, scope, sort_key, doc FROM {b} WHERE projection = $1) AS d
          ORDER BY row_key";
    let live_not_replay = ONE_SIDED
        .replace("{a}", "read_models")
        .replace("{b}", "read_models_replay");
    let replay_not_live = ONE_SIDED
        .replace("{a}", "read_models_replay")
        .replace("{b}", "read_models");
    let (live_side, replay_side): (Vec<String>, Vec<String>) = crate::on_pool!(store, pool => {
        let mut tx = pool.begin().await?;
        if matches!(store, Store::Postgres(_)) {
            sqlx::query("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ")
                .execute(&mut *tx)
                .await?;
        }
        let (transaction_id, position): (i64, i64) = sqlx::query_as(
            "SELECT transaction_id, position FROM consumer_checkpoints WHERE consumer = $1",
        )
        .bind(projection)
        .fetch_optional(&mut *tx)
        .await?
        .unwrap_or((0, 0));
        if (Checkpoint { transaction_id, position }) != expected {
            return Ok(None);
        }
        let live_side = sqlx::query_scalar(&live_not_replay).bind(projection).fetch_all(&mut *tx).await?;
        let replay_side = sqlx::query_scalar(&replay_not_live).bind(projection).fetch_all(&mut *tx).await?;
        tx.commit().await?;
        (live_side, replay_side)
    });
    let replayed: BTreeSet<&String> = replay_side.iter().collect();
    let live: BTreeSet<&String> = live_side.iter().collect();
    let mut differences: Vec<Difference> = live_side
        .iter()
        .map(|key| Difference {
            projection: projection.to_owned(),
            row_key: key.clone(),
            what: if replayed.contains(key) {
                DifferenceKind::Changed
            } else {
                DifferenceKind::OnlyLive
            },
        })
        .collect();
    differences.extend(
        replay_side
            .iter()
            .filter(|key| !live.contains(key))
            .map(|key| Difference {
                projection: projection.to_owned(),
                row_key: key.clone(),
                what: DifferenceKind::OnlyReplay,
            }),
    );
    differences.sort_by(|a, b| a.row_key.cmp(&b.row_key));
    Ok(Some(differences))
}
