//! The live projections, taken in together as one consumer of the log.

use super::*;

/// The live projections in groups, each group one consumer: a group is taken in together (one
/// read of the log, one read of the rows and one statement per batch for all of its
/// projections). All of them form one group: every projection-backed read waits for the
/// slowest projection anyway, and apart each commit cost the database five reads of the log and
/// five writes (C's commands queued behind them).
pub(super) fn projection_groups() -> Vec<Vec<ProjectionRunner>> {
    vec![projections::all()
        .into_iter()
        .map(|projection| ProjectionRunner::new(projection, Table::Live))
        .collect()]
}

/// A group of live projections taken in together. Each keeps its own checkpoint; one that
/// stands behind the others (new, or rebuilt) is first brought alone to where they are.
pub(super) struct ProjectionWork {
    /// The group's lease: its projections' consumer names.
    name: String,
    runners: Vec<ProjectionRunner>,
    store: Store,
    /// Where the group's last batch left its checkpoints.
    standing: Standing,
    lag: std::sync::Mutex<LagReport>,
}

/// When a projection last said how far behind it is.
pub(super) struct LagReport {
    reported: tokio::time::Instant,
    catching_up: bool,
}

/// How often a consumer that is behind logs its lag.
pub(super) const LAG_REPORT_EVERY: Duration = Duration::from_secs(10);

impl ProjectionWork {
    pub(super) fn new(runners: Vec<ProjectionRunner>, store: Store) -> Self {
        let names: Vec<&str> = runners.iter().map(ProjectionRunner::consumer).collect();
        Self {
            name: names.join("+"),
            runners,
            store,
            standing: Standing::default(),
            lag: std::sync::Mutex::new(LagReport {
                reported: tokio::time::Instant::now(),
                catching_up: false,
            }),
        }
    }

    /// Logs the lag (events and seconds behind) every so often while behind, and once when
    /// caught up again.
    async fn report(&self, full_batch: bool) -> Result<(), ConsumerError> {
        let (due, was_catching_up) = {
            let mut lag = self.lag.lock().expect("lag report lock");
            let due = lag.reported.elapsed() >= LAG_REPORT_EVERY;
            let was = lag.catching_up;
            lag.catching_up = full_batch;
            if due && full_batch {
                lag.reported = tokio::time::Instant::now();
            }
            (due, was)
        };
        if full_batch && due {
            for runner in &self.runners {
                let checkpoint = self.store.checkpoint(runner.consumer()).await?;
                let (behind, next) = self.store.lag_estimate(checkpoint).await?;
                let seconds = next.map_or(0, |next| (chrono::Utc::now() - next).num_seconds());
                info!(
                    consumer = runner.consumer(),
                    position = checkpoint.position,
                    lag_positions = behind,
                    lag_seconds = seconds,
                    "projection catching up"
                );
            }
        } else if was_catching_up && !full_batch {
            info!("projections caught up");
        }
        Ok(())
    }

    /// Brings the projections that stand behind the others one batch nearer; `false` when
    /// they all stand at the same checkpoint.
    async fn align(&self) -> Result<bool, ConsumerError> {
        if self.runners.len() < 2 {
            return Ok(false);
        }
        let mut standing = Vec::with_capacity(self.runners.len());
        for runner in &self.runners {
            standing.push(self.store.checkpoint(runner.consumer()).await?);
        }
        let Some(lead) = standing.iter().copied().max() else {
            return Ok(false);
        };
        let mut moved = false;
        for (runner, checkpoint) in self.runners.iter().zip(standing) {
            if checkpoint < lead {
                runner.step(&self.store, PROJECTION_BATCH, lead).await?;
                moved = true;
            }
        }
        Ok(moved)
    }
}

impl Work for ProjectionWork {
    fn name(&self) -> &str {
        &self.name
    }

    fn step(&self) -> Step<'_> {
        Box::pin(async move {
            let remembered = self.standing.take();
            let stepped = match remembered {
                Some(from) => {
                    step_together_from(
                        &self.store,
                        &self.runners,
                        from,
                        PROJECTION_BATCH,
                        Checkpoint::END,
                        || Ok(()),
                    )
                    .await
                }
                None => {
                    if self.align().await? {
                        return Ok(Stepped::Full);
                    }
                    step_together(
                        &self.store,
                        &self.runners,
                        PROJECTION_BATCH,
                        Checkpoint::END,
                        || Ok(()),
                    )
                    .await
                }
            };
            let taken = match stepped {
                // What this instance remembered is out of date (a replay swapped the rows in,
                // or another instance stepped): look again from what the store says. Only a
                // step from the store's own checkpoint tells that another instance holds it.
                Err(ConsumerError::Overtaken(_)) if remembered.is_some() => {
                    return Ok(Stepped::Full)
                }
                Err(error) => return Err(error),
                Ok(taken) => taken,
            };
            self.standing
                .keep(taken.map(|taken| taken.checkpoint).or(remembered));
            let stepped =
                Stepped::of_batch(taken.map_or(0, |taken| taken.events), PROJECTION_BATCH);
            self.report(stepped == Stepped::Full).await?;
            Ok(stepped)
        })
    }
}
