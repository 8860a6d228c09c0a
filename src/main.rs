//! The `seatledger` command.

use clap::{Parser, Subcommand};
use seatledger::config::{LogFormat, ServeSettings, StoreSettings};
use seatledger::store::Store;
use tracing_subscriber::EnvFilter;

/// seatledger: event-sourced books for Microsoft 365 licences.
#[derive(Debug, Parser)]
#[command(version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Runs the HTTP service (migrates the store first).
    Serve(ServeSettings),
    /// Applies the store's schema migrations (PostgreSQL or SQLite, by DATABASE_URL).
    Migrate {
        #[command(flatten)]
        store: StoreSettings,
    },
    /// Rebuilds every projection from the log beside the live one (progress on stderr);
    /// with --verify, compares them row by row and exits non-zero naming each difference.
    Replay {
        #[command(flatten)]
        store: StoreSettings,
        /// Compare the rebuilt projections with the live ones.
        #[arg(long)]
        verify: bool,
    },
    /// Fills a fresh store with a realistic partner and prints what to query next.
    Demo(ServeSettings),
    /// Prints the default offer catalog (the offers of the partner guides) as JSON.
    Offers,
    /// Bearer tokens, straight on the store (no running service needed).
    Token {
        #[command(subcommand)]
        action: TokenAction,
    },
}

#[derive(Debug, Subcommand)]
enum TokenAction {
    /// Issues a token and prints it once (only its hash is stored): how to get back in when
    /// the only admin token is lost.
    Create {
        #[command(flatten)]
        store: StoreSettings,
        /// admin, reseller, customer_admin, password_admin, support or auditor.
        #[arg(long)]
        role: String,
        /// The reseller a `reseller` token acts for.
        #[arg(long)]
        reseller_id: Option<uuid::Uuid>,
        /// The tenant a `customer_admin` or `password_admin` token acts for.
        #[arg(long)]
        tenant_id: Option<uuid::Uuid>,
    },
}

fn init_logging(format: LogFormat) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    // Colour only for a person at a terminal: escape codes do not belong in a log file.
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stdout()));
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
    // A panic is one log event in the log's own format (a JSON log stays one object a line),
    // with where it happened; the default hook's plain-text lines would break that.
    std::panic::set_hook(Box::new(|panic| {
        let message = panic
            .payload()
            .downcast_ref::<String>()
            .map(String::as_str)
            .or_else(|| panic.payload().downcast_ref::<&str>().copied())
            .unwrap_or("a panic without a message");
        let location = panic
            .location()
            .map(|location| format!("{}:{}", location.file(), location.line()))
            .unwrap_or_default();
        let thread = std::thread::current();
        tracing::error!(
            panic = message,
            %location,
            thread = thread.name().unwrap_or("unnamed"),
            "panic"
        );
    }));
}

async fn shutdown_signal() {
    let interrupt = tokio::signal::ctrl_c();
    let mut terminate = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .expect("SIGTERM handler installs");
    tokio::select! {
        _ = interrupt => {}
        _ = terminate.recv() => {}
    }
    tracing::info!("shutting down: finishing in-flight requests");
}

/// Runs `seatledger replay`; `false` when verification found differences.
async fn replay(store: &Store, verify: bool) -> anyhow::Result<bool> {
    use std::io::Write;
    let mut shown = std::time::Instant::now();
    let report = seatledger::read::replay::run(store, verify, |progress| {
        if shown.elapsed() >= std::time::Duration::from_millis(500) {
            shown = std::time::Instant::now();
            let percent = if progress.log_end > 0 {
                progress.position.min(progress.log_end) * 100 / progress.log_end
            } else {
                100
            };
            eprint!(
                "\r{}: {} events, position {} of {} ({percent}%)   ",
                progress.projection, progress.events, progress.position, progress.log_end
            );
            let _ = std::io::stderr().flush();
        }
    })
    .await?;
    eprint!("\r");
    let mut differences = 0;
    for rebuilt in &report {
        let seconds = rebuilt.elapsed.as_secs_f64();
        println!(
            "{:<14} rebuilt from {:>9} events in {:>7.2} s ({:.0} events/s)",
            rebuilt.projection,
            rebuilt.events,
            seconds,
            rebuilt.events as f64 / seconds.max(1e-9)
        );
        for difference in rebuilt.differences.iter().flatten() {
            println!("  DIFFERENCE {difference}");
            differences += 1;
        }
    }
    if verify {
        if differences == 0 {
            println!("verified: every projection equals its replay");
        } else {
            println!("{differences} difference(s) between the live projections and the replay");
        }
    }
    Ok(differences == 0)
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    match Cli::parse().command {
        Command::Serve(settings) => {
            init_logging(settings.log_format);
            // The address first: a start that cannot listen fails before it generates a token
            // nobody would see.
            let listener = tokio::net::TcpListener::bind(&settings.bind)
                .await
                .map_err(|error| {
                    anyhow::anyhow!(
                        "cannot listen on {} ({error}); choose another with --bind or SEATLEDGER_BIND",
                        settings.bind
                    )
                })?;
            let (state, generated) = seatledger::start(&settings).await?;
            if let Ok(address) = listener.local_addr() {
                tracing::info!(%address, "seatledger listening");
            }
            if let Some(token) = generated {
                // Shown once on the terminal, last, never logged: only its hash is stored.
                println!(
                    "\nNo admin token was configured, so one was generated. It is shown only now:\n\n    \
                     export TOKEN={token}\n\nthen: curl -H \"Authorization: Bearer $TOKEN\" http://{}/v1/offers\n\
                     Lost it? `seatledger token create --role admin` issues another on the store.\n",
                    listener.local_addr().map_or_else(|_| settings.bind.clone(), |address| address.to_string())
                );
            }
            let workers = state.workers.clone();
            seatledger::http::serve(listener, state, shutdown_signal()).await?;
            workers.stop().await;
        }
        Command::Demo(settings) => {
            let (state, generated) = seatledger::start(&settings).await?;
            let summary = seatledger::demo::run(&state).await?;
            state.workers.stop().await;
            let base = format!("http://{}", settings.bind);
            println!(
                "Demo partner created in {}.",
                seatledger::store::redact(&settings.store.database_url)
            );
            if let Some(token) = generated {
                println!("\nAdmin token (shown only now): {token}");
            }
            println!(
                "Reseller token (shown only now): {}\n",
                summary.reseller_token
            );
            println!(
                "Start the service on the same store:  seatledger serve --database-url {}",
                settings.store.database_url
            );
            println!("Then, with TOKEN set to the reseller token:\n");
            for (domain, tenant_id) in &summary.tenants {
                println!("  # {domain}");
                println!("  curl -H \"Authorization: Bearer $TOKEN\" {base}/v1/tenants/{tenant_id}/licenses");
            }
            let contoso = summary.tenants[0].1;
            println!("\n  # users of Contoso, with the deleted one and its restore deadline");
            println!("  curl -H \"Authorization: Bearer $TOKEN\" '{base}/v1/tenants/{contoso}/users?include_deleted=true'");
            println!("  # restore it (its licences come back)");
            println!(
                "  curl -X POST -H \"Authorization: Bearer $TOKEN\" {base}/v1/users/{}:restore",
                summary.deleted_user
            );
            println!("  # who did what, when and why");
            println!(
                "  curl -H \"Authorization: Bearer $TOKEN\" {base}/v1/tenants/{contoso}/history"
            );
            println!("\nReseller: {}", summary.reseller_id);
        }
        Command::Token {
            action:
                TokenAction::Create {
                    store,
                    role,
                    reseller_id,
                    tenant_id,
                },
        } => {
            let role: seatledger::auth::Role = role
                .parse()
                .map_err(|reason| anyhow::anyhow!("--role: {reason}"))?;
            let opened = Store::connect(&store.database_url).await?;
            opened.migrate().await?;
            // Scoped only to what exists, as POST /v1/tokens refuses the rest.
            let ledger = seatledger::Ledger::new(opened.clone(), store.rules());
            if let Some(reseller_id) = reseller_id {
                if ledger
                    .reseller_state(reseller_id)
                    .await?
                    .reseller_id
                    .is_none()
                {
                    anyhow::bail!("--reseller-id: reseller {reseller_id} does not exist");
                }
            }
            if let Some(tenant_id) = tenant_id {
                if ledger.tenant(tenant_id).await?.profile.is_none() {
                    anyhow::bail!("--tenant-id: tenant {tenant_id} does not exist");
                }
            }
            let (token_id, token) = seatledger::auth::Tokens::new(opened)
                .issue(role, reseller_id, tenant_id)
                .await?;
            eprintln!("Issued a {role} token (id {token_id}); it is shown only now:");
            println!("export TOKEN={token}");
        }
        Command::Migrate { store } => {
            let opened = Store::connect(&store.database_url).await?;
            opened.migrate().await?;
            println!(
                "{} schema is up to date at {}",
                opened.backend(),
                seatledger::store::redact(&store.database_url)
            );
        }
        Command::Replay { store, verify } => {
            let opened = Store::connect(&store.database_url).await?;
            opened.migrate().await?;
            if !replay(&opened, verify).await? {
                std::process::exit(1);
            }
        }
        Command::Offers => {
            let offers: Vec<_> = aggregates::catalog::default_catalog()
                .offers()
                .cloned()
                .collect();
            println!("{}", serde_json::to_string_pretty(&offers)?);
        }
    }
    Ok(())
}
