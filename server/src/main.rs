use onestop_server::{access_log, app, telemetry, Application, Settings};

const USAGE: &str = "usage: onestop-server [serve | migrate | verify-access-log [--heads FILE] | export-access-heads
                      | rotate-keys | disable-account USERNAME | sweep-media]
  serve                     run the API (the default)
  migrate                   apply pending database migrations and exit
  verify-access-log [--heads FILE]
                            check every person's access-record chain with ACCESS_LOG_KEY (and
                            ACCESS_LOG_KEY_PREVIOUS); with --heads, also that no chain ends before
                            the head exported to FILE; exits 1 if one is broken
  export-access-heads       verify every chain and print each person's head (place and link),
                            signed with ACCESS_LOG_KEY, for an auditor to keep outside the database:
                            onestop-server export-access-heads > heads.json
  rotate-keys               new data key for identifiers, every data key re-wrapped by RRN_KEK,
                            every stored number re-encrypted (set RRN_KEK_PREVIOUS to retire a KEK)
  disable-account USERNAME  disable an account; its sign-ins and tokens stop at once
  sweep-media [--dry-run] [--older-than-hours N]
                            remove stored files no record names (left by a process that stopped
                            between storing a file and recording it), last written over N hours
                            ago (24); --dry-run only lists them";

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let command = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "serve".to_owned());
    let settings = match Settings::load() {
        Ok(settings) => settings,
        Err(error) => {
            eprintln!("configuration error: {error}");
            return std::process::ExitCode::from(2);
        }
    };
    telemetry::init_tracing(&settings.log_format);
    let _ = rustls::crypto::ring::default_provider().install_default();
    match command.as_str() {
        "serve" => serve(settings).await,
        "migrate" => migrate(settings).await,
        "verify-access-log" => match std::env::args().skip(2).collect::<Vec<_>>().as_slice() {
            [] => verify_access_log(settings, None).await,
            [flag, path] if flag == "--heads" => verify_access_log(settings, Some(path)).await,
            _ => {
                eprintln!("{USAGE}");
                std::process::ExitCode::from(2)
            }
        },
        "export-access-heads" => export_access_heads(settings).await,
        "rotate-keys" => rotate_keys(settings).await,
        "sweep-media" => sweep_media(settings).await,
        "disable-account" => match std::env::args().nth(2) {
            Some(username) => disable(settings, &username).await,
            None => {
                eprintln!("{USAGE}");
                std::process::ExitCode::from(2)
            }
        },
        _ => {
            eprintln!("{USAGE}");
            std::process::ExitCode::from(2)
        }
    }
}

async fn migrate(settings: Settings) -> std::process::ExitCode {
    use onestop_migrations::{Migrator, MigratorTrait};
    let result = async {
        let db = app::connect_database(&settings).await?;
        Migrator::up(&db, None).await?;
        Ok::<_, Box<dyn std::error::Error>>(())
    }
    .await;
    match result {
        Ok(()) => {
            println!("the database schema is up to date");
            std::process::ExitCode::SUCCESS
        }
        Err(error) => {
            eprintln!("migration failed: {error}");
            std::process::ExitCode::FAILURE
        }
    }
}

async fn disable(settings: Settings, username: &str) -> std::process::ExitCode {
    let outcome = match app::connect_database(&settings).await {
        Ok(db) => onestop_server::auth::disable_account(&db, username)
            .await
            .map_err(|e| e.to_string()),
        Err(error) => Err(error.to_string()),
    };
    match outcome {
        Ok(true) => {
            println!("{username} is disabled; its sign-ins have ended");
            std::process::ExitCode::SUCCESS
        }
        Ok(false) => {
            eprintln!("there is no account {username}");
            std::process::ExitCode::FAILURE
        }
        Err(error) => {
            eprintln!("disabling failed: {error}");
            std::process::ExitCode::FAILURE
        }
    }
}

async fn rotate_keys(settings: Settings) -> std::process::ExitCode {
    let outcome = async {
        let db = app::connect_database(&settings)
            .await
            .map_err(|e| e.to_string())?;
        let vault = app::vault_from_settings(&settings).map_err(|e| e.to_string())?;
        vault.rotate(&db).await.map_err(|e| e.to_string())
    }
    .await;
    match outcome {
        Ok(count) => {
            println!("keys rotated; {count} stored numbers re-encrypted");
            std::process::ExitCode::SUCCESS
        }
        Err(error) => {
            eprintln!("rotation failed, nothing changed: {error}");
            std::process::ExitCode::FAILURE
        }
    }
}

async fn sweep_media(settings: Settings) -> std::process::ExitCode {
    let (mut dry_run, mut hours) = (false, 24u64);
    let mut arguments = std::env::args().skip(2);
    while let Some(argument) = arguments.next() {
        match argument.as_str() {
            "--dry-run" => dry_run = true,
            "--older-than-hours" => match arguments.next().and_then(|h| h.parse().ok()) {
                Some(given) => hours = given,
                None => {
                    eprintln!("{USAGE}");
                    return std::process::ExitCode::from(2);
                }
            },
            _ => {
                eprintln!("{USAGE}");
                return std::process::ExitCode::from(2);
            }
        }
    }
    let outcome = async {
        let db = app::connect_database(&settings)
            .await
            .map_err(|e| e.to_string())?;
        let media = onestop_server::media::from_settings(&settings)
            .await
            .map_err(|e| e.to_string())?;
        let grace = std::time::Duration::from_secs(hours * 3600);
        onestop_server::uploads::orphans::sweep(&db, media.as_ref(), grace, !dry_run)
            .await
            .map_err(|e| e.to_string())
    }
    .await;
    match outcome {
        Ok(report) => {
            println!(
                "{} stored files examined; {} without a record and last written over {hours} h ago; \
                 {} younger ones kept",
                report.examined,
                report.orphans.len(),
                report.young
            );
            if let Some(reason) = &report.refused {
                eprintln!("nothing was removed: {reason}");
                return std::process::ExitCode::FAILURE;
            }
            if dry_run {
                for key in &report.orphans {
                    println!("  {key}");
                }
            } else {
                println!("{} removed", report.removed);
            }
            std::process::ExitCode::SUCCESS
        }
        Err(error) => {
            eprintln!("the sweep stopped: {error}");
            std::process::ExitCode::FAILURE
        }
    }
}

/// The database and the chain keys, for the commands that read the access
/// records. No key is made here: a new key would make every record look
/// altered.
async fn access_log_setup(
    settings: &Settings,
) -> Result<(sea_orm::DatabaseConnection, access_log::ChainKeys), String> {
    let keys = app::access_log_keys_from_settings(settings, false).map_err(|e| e.to_string())?;
    let db = app::connect_database(settings)
        .await
        .map_err(|e| e.to_string())?;
    Ok((db, keys))
}

fn describe_breaks(report: &access_log::ChainReport) -> String {
    let mut text = format!(
        "{} access records of {} people; broken:",
        report.records, report.people
    );
    for broken in &report.breaks {
        text.push_str(&format!(
            "\n  person {} record {}: {}",
            broken.subject, broken.seq, broken.reason
        ));
    }
    text
}

async fn verify_access_log(settings: Settings, heads: Option<&str>) -> std::process::ExitCode {
    let (db, keys) = match access_log_setup(&settings).await {
        Ok(setup) => setup,
        Err(error) => {
            eprintln!("{error}");
            return std::process::ExitCode::FAILURE;
        }
    };
    let report = match heads {
        None => access_log::verify(&db, &keys, None).await,
        Some(path) => {
            let exported = std::fs::read_to_string(path)
                .map_err(|e| format!("{path}: {e}"))
                .and_then(|text| access_log::ExportedHeads::open(&text, &keys));
            match exported {
                Ok(exported) => access_log::verify_against(&db, &keys, &exported).await,
                Err(error) => {
                    eprintln!("the exported heads cannot be used: {error}");
                    return std::process::ExitCode::FAILURE;
                }
            }
        }
    };
    match report {
        Ok(report) if report.breaks.is_empty() => {
            println!(
                "{} access records of {} people: every chain holds{}",
                report.records,
                report.people,
                if heads.is_some() {
                    " and reaches its exported head"
                } else {
                    ""
                }
            );
            if let Some(sealed_at) = report.sealed_at {
                println!(
                    "  records from before keyed links sealed at {}: {} people's hold up to \
                     their seals",
                    sealed_at.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
                    report.sealed_people
                );
            }
            std::process::ExitCode::SUCCESS
        }
        Ok(report) => {
            println!("{}", describe_breaks(&report));
            std::process::ExitCode::FAILURE
        }
        Err(error) => {
            eprintln!("reading the access records failed: {error}");
            std::process::ExitCode::FAILURE
        }
    }
}

async fn export_access_heads(settings: Settings) -> std::process::ExitCode {
    let (db, keys) = match access_log_setup(&settings).await {
        Ok(setup) => setup,
        Err(error) => {
            eprintln!("{error}");
            return std::process::ExitCode::FAILURE;
        }
    };
    match access_log::export_heads(&db, &keys).await {
        Ok(Ok(exported)) => match serde_json::to_string_pretty(&exported) {
            Ok(text) => {
                println!("{text}");
                eprintln!(
                    "{} people's chain heads exported, signed with key {}",
                    exported.heads.len(),
                    exported.key_id
                );
                std::process::ExitCode::SUCCESS
            }
            Err(error) => {
                eprintln!("the heads could not be written: {error}");
                std::process::ExitCode::FAILURE
            }
        },
        Ok(Err(report)) => {
            // Stdout is the heads file: the report goes to stderr.
            eprintln!("nothing was exported: a broken chain is not signed");
            eprintln!("{}", describe_breaks(&report));
            std::process::ExitCode::FAILURE
        }
        Err(error) => {
            eprintln!("reading the access records failed: {error}");
            std::process::ExitCode::FAILURE
        }
    }
}

async fn serve(settings: Settings) -> std::process::ExitCode {
    let bind = settings.bind_addr.clone();
    let docs = settings.docs_served();
    let application = match Application::build(settings).await {
        Ok(application) => application,
        Err(error) => {
            tracing::error!(%error, "the server could not start");
            return std::process::ExitCode::FAILURE;
        }
    };
    let base = format!(
        "http://{}:{}",
        bind.rsplit_once(':').map(|(h, _)| h).unwrap_or("127.0.0.1"),
        application.port()
    );
    tracing::info!(address = %base, "serving");
    println!("One-Stop Mobile server listening on {base}");
    if docs {
        println!("  API docs:     {base}/docs   (OpenAPI document: {base}/openapi.json)");
    }
    println!("  health:       {base}/healthz, {base}/readyz, metrics: {base}/metrics");
    if !application.demo_accounts().is_empty() {
        println!("  demo accounts:");
        for account in application.demo_accounts() {
            println!("    {account}");
        }
    }

    match application
        .run_until_stopped(onestop_runtime::shutdown_signal())
        .await
    {
        Ok(()) => {
            tracing::info!("stopped");
            std::process::ExitCode::SUCCESS
        }
        Err(error) => {
            tracing::error!(%error, "the server stopped with an error");
            std::process::ExitCode::FAILURE
        }
    }
}
