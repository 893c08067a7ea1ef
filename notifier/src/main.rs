use std::process::ExitCode;

use onestop_notifier::dead_letters::DeadLetters;
use onestop_notifier::ops::OpsServer;
use onestop_notifier::{telemetry, Notifier, Settings};
use tokio_util::sync::CancellationToken;

const USAGE: &str = "\
usage: onestop-notifier                      run the notifier
       onestop-notifier dead-letters list [--limit N]
       onestop-notifier dead-letters show ID
       onestop-notifier dead-letters replay ID... | --all

Configuration comes from the environment (DATABASE_URL, REDIS_URL,
REDIS_PREFIX, NOTIFIER_*), as for the notifier itself.";

#[tokio::main]
async fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.first().map(String::as_str) {
        None => run().await,
        Some("dead-letters") => dead_letters(&args[1..]).await,
        Some("-h" | "--help" | "help") => {
            println!("{USAGE}");
            ExitCode::SUCCESS
        }
        Some(other) => {
            eprintln!("unknown command `{other}`\n\n{USAGE}");
            ExitCode::from(2)
        }
    }
}

/// The operator's dead-letter command.
async fn dead_letters(args: &[String]) -> ExitCode {
    let settings = match Settings::load() {
        Ok(settings) => settings,
        Err(error) => {
            eprintln!("configuration error: {error}");
            return ExitCode::from(2);
        }
    };
    let words: Vec<&str> = args.iter().map(String::as_str).collect();
    let connected = async {
        let redis = redis::Client::open(settings.redis_url.as_str())?
            .get_multiplexed_async_connection()
            .await?;
        let mut options = sea_orm::ConnectOptions::new(settings.database_url.clone());
        options.max_connections(1).sqlx_logging(false);
        let db = sea_orm::Database::connect(options).await?;
        Ok::<_, onestop_notifier::NotifierError>(DeadLetters::new(
            redis,
            db,
            &settings.redis_prefix,
        ))
    };
    let letters = match words.first() {
        Some(&("list" | "show" | "replay")) => match connected.await {
            Ok(letters) => letters,
            Err(error) => {
                eprintln!("cannot reach Redis or the database: {error}");
                return ExitCode::FAILURE;
            }
        },
        _ => {
            eprintln!("{USAGE}");
            return ExitCode::from(2);
        }
    };
    let result = match words.as_slice() {
        ["list"] | ["list", "--limit", _] => {
            let limit = match words.get(2).map(|n| n.parse::<usize>()) {
                None => 100,
                Some(Ok(limit)) if limit > 0 => limit,
                Some(_) => {
                    eprintln!("--limit takes a positive number");
                    return ExitCode::from(2);
                }
            };
            match (letters.list(limit).await, letters.count().await) {
                (Ok(list), Ok(total)) => {
                    println!("id\tdeliveries\tfailed_at\tkind\treason");
                    for letter in &list {
                        println!("{}", letter.summary());
                    }
                    eprintln!("{} of {total} dead letter(s)", list.len());
                    Ok(true)
                }
                (Err(error), _) | (_, Err(error)) => Err(error),
            }
        }
        ["show", id] => match letters.show(id).await {
            Ok(Some(letter)) => {
                let text = serde_json::to_string_pretty(&letter).unwrap_or_default();
                println!("{text}");
                Ok(true)
            }
            Ok(None) => {
                eprintln!("no dead letter {id}");
                Ok(false)
            }
            Err(error) => Err(error),
        },
        ["replay", "--all"] => {
            let mut replayed = 0;
            let mut result = Ok(true);
            loop {
                let batch = match letters.list(100).await {
                    Ok(batch) => batch,
                    Err(error) => {
                        result = Err(error);
                        break;
                    }
                };
                let mut progress = false;
                for letter in &batch {
                    match letters.replay(&letter.id).await {
                        Ok(true) => {
                            replayed += 1;
                            progress = true;
                        }
                        Ok(false) => eprintln!("{} is not an event; left in place", letter.id),
                        Err(error) => {
                            result = Err(error);
                            break;
                        }
                    }
                }
                if !progress || result.is_err() {
                    break;
                }
            }
            println!("{replayed} replayed");
            result
        }
        ["replay", ids @ ..] if !ids.is_empty() => {
            let mut all = true;
            let mut result = Ok(true);
            for id in ids {
                match letters.replay(id).await {
                    Ok(true) => println!("{id} replayed"),
                    Ok(false) => {
                        eprintln!("no dead letter {id} holding an event");
                        all = false;
                    }
                    Err(error) => {
                        result = Err(error);
                        break;
                    }
                }
            }
            result.map(|_| all)
        }
        _ => {
            eprintln!("{USAGE}");
            return ExitCode::from(2);
        }
    };
    match result {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(error) => {
            eprintln!("failed: {error}");
            ExitCode::FAILURE
        }
    }
}

async fn run() -> ExitCode {
    let settings = match Settings::load() {
        Ok(settings) => settings,
        Err(error) => {
            eprintln!("configuration error: {error}");
            return ExitCode::from(2);
        }
    };
    telemetry::init_tracing(&settings.log_format);
    let _ = rustls::crypto::ring::default_provider().install_default();
    let metrics = telemetry::metrics_handle().clone();
    let grace = settings.shutdown_grace();
    let metrics_addr = settings.metrics_addr.clone();

    let notifier = match Notifier::build(settings).await {
        Ok(notifier) => notifier,
        Err(error) => {
            tracing::error!(%error, "the notifier could not start");
            return ExitCode::FAILURE;
        }
    };
    let ops = match OpsServer::bind(&metrics_addr, notifier.clone(), metrics).await {
        Ok(ops) => ops,
        Err(error) => {
            tracing::error!(%error, "the notifier could not start");
            return ExitCode::FAILURE;
        }
    };
    tracing::info!(address = %metrics_addr, "serving /healthz and /metrics");

    let cancel = CancellationToken::new();
    let worker = notifier.spawn(cancel.clone());
    let ops = tokio::spawn(ops.run_until_stopped(cancel.clone().cancelled_owned()));

    onestop_runtime::shutdown_signal().await;
    cancel.cancel();
    if tokio::time::timeout(grace, worker).await.is_err() {
        tracing::warn!(
            "the batch in flight did not finish within the grace period; its entries stay pending"
        );
    }
    let _ = ops.await;
    tracing::info!("stopped");
    ExitCode::SUCCESS
}
