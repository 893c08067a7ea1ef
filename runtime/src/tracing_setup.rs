use tracing_subscriber::EnvFilter;

/// Installs the log subscriber once; later calls (tests) do nothing.
///
/// `format` `json` writes JSON lines, anything else text (coloured only on
/// a terminal). `RUST_LOG` chooses what is logged; without it,
/// `default_filter`.
pub fn init_tracing(format: &str, default_filter: &str) {
    let filter =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default_filter));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stdout()))
        .with_target(true);
    let _ = if format == "json" {
        builder.json().flatten_event(true).try_init()
    } else {
        builder.try_init()
    };
}
